// The jobs table's filters by state and by type, each option with how many of the
// caller's jobs it would show. The counts come from GET /api/v1/job-counts: read when the
// listing is, and again (at most once a second) after events that change a job's state.

import { API, api } from "./api.js";
import { $, el } from "./dom.js";

const STATES = ["queued", "processing", "completed", "failed", "cancelled"];
const RECOUNT_AFTER = 1000;  // ms: a burst of events costs one request, not one each

/** Dispatches "change" when the user picks another state or type. */
export class Filters extends EventTarget {
  constructor() {
    super();
    this.state = "";
    this.type = "";
    this.counts = [];  // [{type, state, count}]
    this.recount = null;
    this.loads = 0;
    for (const [id, key] of [["filter-state", "state"], ["filter-type", "type"]]) {
      $(id).addEventListener("change", (e) => {
        this[key] = e.target.value;
        this.render();
        this.dispatchEvent(new CustomEvent("change"));
      });
    }
  }

  get active() {
    return Boolean(this.state || this.type);
  }

  /** The listing's query parameters for the chosen filters. */
  query() {
    const params = new URLSearchParams();
    if (this.state) params.set("state", this.state);
    if (this.type) params.set("type", this.type);
    const text = params.toString();
    return text ? `&${text}` : "";
  }

  matches(job) {
    return (!this.state || job.state === this.state) && (!this.type || job.type === this.type);
  }

  async load() {
    clearTimeout(this.recount);
    this.recount = null;
    const asked = ++this.loads;
    try {
      const { counts } = await api(`${API}/job-counts`);
      if (asked !== this.loads) return;  // a later count is on its way: an older one is stale
      this.counts = counts;
      this.render();
    } catch (error) {
      console.warn("could not count the jobs", error);
    }
  }

  /** Count again soon: a job changed state. */
  changed() {
    if (this.recount === null) this.recount = setTimeout(() => this.load(), RECOUNT_AFTER);
  }

  /** Each state counted within the chosen type, each type within the chosen state. */
  render() {
    const byState = new Map(STATES.map((s) => [s, 0]));
    const byType = new Map();
    for (const { type, state, count } of this.counts) {
      if (!this.type || type === this.type) byState.set(state, (byState.get(state) || 0) + count);
      if (!this.state || state === this.state) byType.set(type, (byType.get(type) || 0) + count);
    }
    if (this.type && !byType.has(this.type)) byType.set(this.type, 0);
    const types = [...byType.keys()].sort();
    fill($("filter-state"), "All states", byState, STATES, this.state);
    fill($("filter-type"), "All types", byType, types, this.type);
  }
}

function fill(select, allText, counts, values, chosen) {
  const total = [...counts.values()].reduce((sum, n) => sum + n, 0);
  select.replaceChildren(
    el("option", { value: "" }, `${allText} (${total})`),
    ...values.map((value) => el("option", { value }, `${value} (${counts.get(value) || 0})`)));
  select.value = chosen;
}
