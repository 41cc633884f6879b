// The jobs the page knows, kept current by events, and the table that shows them.

import { API, ApiError, api } from "./api.js";
import {
  $, ACTIVE, TERMINAL, age, announce, duration, el, errorText, localTime, percent, shortId,
} from "./dom.js";

/**
 * Every job the page has seen, by id. A job changes only through an event whose `seq`
 * is the next one after its `last_event_id`, or through a fresh copy of its resource
 * that is at least as new; so duplicates are ignored, and a gap (which would mean a
 * missed event) is healed by fetching the job again.
 * Dispatches "change" (detail: {job, event}) whenever a job is added or changes, and
 * "remove" (detail: {id}) when one is deleted.
 */
export class JobStore extends EventTarget {
  constructor() {
    super();
    this.jobs = new Map();
    this.fetching = new Map();  // job id -> events that came while it was being fetched
  }

  clear() {
    this.jobs.clear();
    this.fetching.clear();
    this.dispatchEvent(new CustomEvent("reset"));
  }

  /** Forget a deleted job. */
  remove(id) {
    if (this.jobs.delete(id)) this.dispatchEvent(new CustomEvent("remove", { detail: { id } }));
  }

  /** Take a job resource; an older copy than the one held is ignored. */
  upsert(resource) {
    const held = this.jobs.get(resource.id);
    if (held && held.last_event_id > resource.last_event_id) return held;
    const job = { ...resource, live: held ? held.live : {} };
    this.jobs.set(job.id, job);
    this.changed(job, null, held ? held.state : null);
    return job;
  }

  /** Apply one event of the global stream (its parsed `data`). */
  apply(event) {
    const waiting = this.fetching.get(event.job_id);
    if (waiting) {
      waiting.push(event);
      return;
    }
    const job = this.jobs.get(event.job_id);
    if (!job || event.seq > job.last_event_id + 1) {
      this.refetch(event.job_id, event);  // not seen yet (submitted elsewhere), or a gap
      return;
    }
    if (event.seq <= job.last_event_id) return;  // already part of the copy we hold
    update(job, event);
    this.changed(job, event);
  }

  async refetch(id, event) {
    const waiting = [event];
    this.fetching.set(id, waiting);
    try {
      const held = this.jobs.get(id);
      this.upsert(await api(held ? held.links.self : `${API}/jobs/${encodeURIComponent(id)}`));
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) console.warn(error);
    } finally {
      this.fetching.delete(id);
    }
    const job = this.jobs.get(id);
    if (!job) return;
    for (const later of waiting) {
      if (later.seq === job.last_event_id + 1) {
        update(job, later);
        this.changed(job, later);
      }
    }
  }

  /** `event`: the event applied, or null for a fetched copy, which says the state the
   * job had before it (`before`; null when it is new here). */
  changed(job, event, before = null) {
    this.dispatchEvent(new CustomEvent("change", { detail: { job, event, before } }));
  }
}

/** Change a job as the event says, mirroring what the server stores. */
export function update(job, event) {
  job.state = event.state;
  job.last_event_id = event.seq;
  switch (event.event) {
    case "queued":
      job.live.position = event.position;
      break;
    case "processing":
      job.attempt = event.attempt;
      job.started_at = job.started_at || event.at;
      job.progress = 0;
      job.message = null;
      job.live = {};
      break;
    case "progress":
      job.progress = event.progress;
      job.message = event.message;
      job.live.eta = event.eta;
      job.live.etaAt = event.at;
      break;
    case "retrying":
      job.attempt = event.attempt - 1;
      job.error = event.error;
      job.live = { retryAt: event.retry_at };
      break;
    case "completed":
      job.progress = 100;
      job.result = event.result;
      job.error = null;
      job.finished_at = event.at;
      job.live = {};
      break;
    case "failed":
    case "cancelled":
      job.error = event.error || job.error;
      job.finished_at = event.at;
      job.live = {};
      break;
    default:
      break;
  }
}

/** The text under a job's progress bar. */
export function statusLine(job) {
  if (job.state === "queued" && job.live.retryAt) {
    return `Retrying at ${new Date(job.live.retryAt).toLocaleTimeString()} — ` +
      errorText(job.error);
  }
  if (job.state === "queued" && job.attempt > 0 && job.error) {
    return `Waiting to retry — ${errorText(job.error)}`;
  }
  if (job.state === "queued") {
    return job.live.position ? `Waiting for a worker (#${job.live.position} in line)`
      : "Waiting for a worker";
  }
  if (job.state === "cancelled") {
    return job.error && job.error.message ? capitalise(job.error.message) : "Cancelled";
  }
  if (job.state === "failed") return errorText(job.error) || job.message || "";
  return job.message || (job.state === "processing" ? "Started" : "");
}

const capitalise = (text) => text[0].toUpperCase() + text.slice(1);

/** Update a progress bar element (role=progressbar with a .bar-fill child). */
export function setBar(bar, job) {
  const value = job.state === "completed" ? 100 : Math.max(0, Math.min(100, job.progress || 0));
  const rounded = Math.round(value * 10) / 10;
  if (bar.getAttribute("aria-valuenow") !== String(rounded)) {
    bar.setAttribute("aria-valuenow", String(rounded));
    bar.setAttribute("aria-valuetext", percent(value));
    bar.firstElementChild.style.width = `${value}%`;  // CSSOM: allowed by the page's CSP
  }
  bar.dataset.state = job.state;
}

export function badge(node, state) {
  node.className = `badge badge-${state}`;
  node.textContent = state;
}

/** The jobs table: one row per job that `matches`, newest first, updated in place. */
export class JobTable {
  constructor(store, { onOpen, matches = () => true, filtered = () => false }) {
    this.store = store;
    this.onOpen = onOpen;
    this.matches = matches;
    this.filtered = filtered;
    this.body = $("jobs-body");
    this.rows = new Map();  // id -> {row, cells}
    store.addEventListener("change", (e) => this.render(e.detail.job, e.detail.event));
    store.addEventListener("reset", () => {
      this.body.replaceChildren();
      this.rows.clear();
    });
    store.addEventListener("remove", (e) => this.drop(e.detail.id));
    this.body.addEventListener("click", (e) => {
      const row = e.target.closest("tr[data-id]");
      if (row && !e.target.closest("a, button")) this.onOpen(row.dataset.id);
    });
  }

  render(job, event) {
    if (!this.matches(job)) {
      this.drop(job.id);  // e.g. it left the state the table is filtered by
      return;
    }
    let entry = this.rows.get(job.id);
    if (!entry) {
      entry = this.createRow(job);
      this.rows.set(job.id, entry);
      this.insert(entry.row, job.id);
    }
    const { row, cells } = entry;
    const before = row.dataset.state;
    row.dataset.state = job.state;
    badge(cells.state, job.state);
    setBar(cells.bar, job);
    cells.percent.textContent = percent(job.state === "completed" ? 100 : job.progress);
    cells.message.textContent = statusLine(job);
    cells.message.title = statusLine(job);
    cells.attempt.textContent = `${job.attempt} / ${job.max_attempts}`;
    this.tick(entry, job);
    if (event && before !== job.state && TERMINAL.has(job.state)) {
      announce(`${job.type} job ${shortId(job.id)} ${job.state}.`);
    }
    this.summarise();
  }

  drop(id) {
    const entry = this.rows.get(id);
    if (entry) entry.row.remove();
    this.rows.delete(id);
    this.summarise();
  }

  createRow(job) {
    const link = el("a", { class: "job-link", href: `#/jobs/${encodeURIComponent(job.id)}` },
      el("span", { class: "job-type" }, job.type),
      el("span", { class: "job-id" }, shortId(job.id)));
    const cells = {
      state: el("span", { class: "badge" }),
      bar: el("div", { class: "bar", role: "progressbar", "aria-valuemin": 0,
        "aria-valuemax": 100, "aria-label": `Progress of ${job.type} ${shortId(job.id)}` },
      el("div", { class: "bar-fill" })),
      percent: el("span", { class: "percent" }),
      message: el("span", { class: "job-message" }),
      attempt: el("span", {}),
      age: el("time", { datetime: job.created_at, title: localTime(job.created_at) }),
      duration: el("span", {}),
    };
    const row = el("tr", { class: "job", "data-id": job.id },
      el("td", { class: "cell-job" }, link),
      el("td", { class: "cell-state" }, cells.state),
      el("td", { class: "cell-progress" },
        el("div", { class: "progress-line" }, cells.bar, cells.percent), cells.message),
      el("td", { class: "cell-attempt", "data-label": "Attempt" }, cells.attempt),
      el("td", { class: "cell-age", "data-label": "Age" }, cells.age),
      el("td", { class: "cell-duration", "data-label": "Duration" }, cells.duration));
    return { row, cells };
  }

  /** Rows are ordered by id, which sorts by creation time: newest first. */
  insert(row, id) {
    for (const other of this.body.children) {
      if (other.dataset.id < id) {
        this.body.insertBefore(row, other);
        return;
      }
    }
    this.body.append(row);
  }

  /** Refresh the clock-driven cells (age, running duration). */
  tick(entry, job, now = Date.now()) {
    entry.cells.age.textContent = age(job.created_at, now);
    entry.cells.duration.textContent = duration(job, now);
  }

  tickAll() {
    const now = Date.now();
    for (const [id, entry] of this.rows) {
      const job = this.store.jobs.get(id);
      if (job) this.tick(entry, job, now);
    }
  }

  summarise() {
    const counts = { queued: 0, processing: 0 };
    for (const job of this.store.jobs.values()) {
      if (ACTIVE.has(job.state)) counts[job.state] += 1;
    }
    const parts = [];
    if (counts.processing) parts.push(`${counts.processing} running`);
    if (counts.queued) parts.push(`${counts.queued} queued`);
    $("jobs-summary").textContent = parts.join(" · ");
    const nothing = this.rows.size === 0 && $("jobs-loading").hidden;
    $("jobs-empty").hidden = !nothing || this.filtered();
    $("jobs-none-match").hidden = !nothing || !this.filtered();
    document.title = counts.processing ? `(${counts.processing}) sse-jobs` : "sse-jobs";
  }
}
