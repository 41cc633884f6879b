// The job detail view: facts, result or error, cancel, re-run and delete buttons, and the
// job's full event history replayed from its own stream (links.events) and then followed live.

import { API, ApiError, api } from "./api.js";
import {
  $, ACTIVE, TERMINAL, announce, clock, duration, el, errorText, localTime, percent, shortId,
  span,
} from "./dom.js";
import { badge, setBar, statusLine } from "./jobs.js";

const EVENTS = ["queued", "processing", "progress", "retrying", "completed", "failed",
  "cancelled"];

function describe(event) {
  switch (event.event) {
    case "queued":
      return event.position ? `Queued, #${event.position} in line` : "Queued";
    case "processing":
      return `Attempt ${event.attempt} started`;
    case "progress": {
      const parts = [percent(event.progress)];
      if (event.message) parts.push(event.message);
      if (event.eta !== null && event.eta !== undefined) parts.push(`${span(event.eta)} left`);
      return parts.join(" · ");
    }
    case "retrying":
      return `${errorText(event.error)} — attempt ${event.attempt} at ` +
        `${new Date(event.retry_at).toLocaleTimeString()}`;
    case "completed":
      return "Completed";
    case "failed":
      return errorText(event.error) || "Failed";
    case "cancelled":
      return event.error && event.error.message ? capital(event.error.message) : "Cancelled";
    default:
      return "";
  }
}

const capital = (text) => text[0].toUpperCase() + text.slice(1);

export class DetailView {
  constructor(store, { onClose, onRerun, onDeleted }) {
    this.store = store;
    this.onRerun = onRerun;
    this.onDeleted = onDeleted;
    this.busy = false;  // a re-run or delete is under way
    this.confirmDelete = false;
    this.dialog = $("detail");
    this.id = null;
    this.stream = null;
    this.lastSeq = 0;
    this.cancelling = false;
    $("detail-close").addEventListener("click", () => this.dialog.close());
    this.dialog.addEventListener("close", () => {
      this.stop();
      this.id = null;
      onClose();
    });
    // A click on the backdrop (outside the panel) closes the dialog too.
    this.dialog.addEventListener("click", (e) => {
      if (e.target === this.dialog) this.dialog.close();
    });
    $("detail-cancel").addEventListener("click", () => this.cancel());
    $("detail-rerun").addEventListener("click", () => this.rerun());
    $("detail-delete").addEventListener("click", () => this.remove());
    $("detail-copy").addEventListener("click", () => this.copyId());
    store.addEventListener("change", (e) => {
      if (e.detail.job.id === this.id) this.render(e.detail.job);
    });
  }

  /** Show a job: a fresh copy of it (fresh links too), then its history from seq 1. */
  async open(id) {
    if (this.id === id && this.dialog.open) return;
    this.stop();
    this.id = id;
    this.lastSeq = 0;
    this.cancelling = false;
    this.busy = false;
    this.confirmDelete = false;
    $("detail-history").replaceChildren();
    $("detail-action-status").textContent = "";
    const known = this.store.jobs.get(id);
    if (known) this.render(known);
    else this.blank(id);
    if (!this.dialog.open) this.dialog.showModal();
    try {
      const job = this.store.upsert(await api(known ? known.links.self
        : `/api/v1/jobs/${encodeURIComponent(id)}`));
      if (this.id !== id) return;
      this.render(job);
      this.follow(job);
    } catch (error) {
      if (this.id !== id) return;
      $("detail-title").textContent = error.status === 404 ? "No such job" : "Job";
      $("detail-message").textContent = error.status === 404
        ? "This job does not exist, or it was deleted." : error.message;
    }
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  blank(id) {
    $("detail-title").textContent = "Job";
    $("detail-id").textContent = id;
    $("detail-state").className = "badge";
    $("detail-state").textContent = "";
    $("detail-percent").textContent = "";
    $("detail-message").textContent = "Loading…";
    for (const part of ["detail-cancel", "detail-rerun", "detail-delete", "detail-download",
      "detail-error", "detail-result"]) {
      $(part).hidden = true;
    }
  }

  render(job) {
    $("detail-title").textContent = `${job.type} job`;
    $("detail-id").textContent = job.id;
    badge($("detail-state"), job.state);
    setBar($("detail-bar"), job);
    $("detail-percent").textContent = percent(job.state === "completed" ? 100 : job.progress);
    // A failed or cancelled job's error has its own box below.
    $("detail-message").textContent = job.state === "failed" || job.state === "cancelled"
      ? job.message || "" : statusLine(job);
    if (TERMINAL.has(job.state) && this.cancelling) {
      this.cancelling = false;
      $("detail-action-status").textContent = job.state === "cancelled" ? "Cancelled." : "";
    }
    const cancel = $("detail-cancel");
    cancel.hidden = !ACTIVE.has(job.state);
    cancel.disabled = this.cancelling;
    cancel.textContent = this.cancelling ? "Cancelling…" : "Cancel job";
    const rerun = $("detail-rerun");
    rerun.hidden = job.state !== "failed" && job.state !== "cancelled";
    rerun.disabled = this.busy;
    const remove = $("detail-delete");
    remove.hidden = !TERMINAL.has(job.state);
    remove.disabled = this.busy;
    remove.textContent = this.confirmDelete ? "Delete for good?" : "Delete job";
    this.renderOutcome(job);
    this.renderFacts(job);
    $("detail-params").textContent = JSON.stringify(job.params, null, 2);
  }

  renderOutcome(job) {
    const completed = job.state === "completed";
    const download = $("detail-download");
    download.hidden = !completed;
    if (completed) {
      download.href = job.links.result;
      // A file result names itself (Content-Disposition); a JSON one gets this name.
      download.setAttribute("download", `${job.type}-${job.id}.json`);
    }
    const hasResult = completed && job.result !== null && job.result !== undefined;
    $("detail-result").hidden = !hasResult;
    if (hasResult) $("detail-result-json").textContent = JSON.stringify(job.result, null, 2);
    const failed = job.state === "failed" || job.state === "cancelled";
    const errorBox = $("detail-error");
    errorBox.hidden = !(failed && job.error);
    if (failed && job.error) {
      $("detail-error-title").textContent = job.state === "failed" ? "Why it failed"
        : "Cancelled";
      $("detail-error-text").textContent = job.state === "failed" ? errorText(job.error)
        : capital(job.error.message || "cancelled");
      $("detail-traceback").hidden = !job.error.traceback;
      $("detail-traceback").textContent = job.error.traceback || "";
    }
  }

  renderFacts(job) {
    const facts = [
      ["Created", localTime(job.created_at)],
      ["Started", localTime(job.started_at)],
      ["Finished", localTime(job.finished_at)],
      ["Duration", duration(job)],
      ["Attempt", `${job.attempt} of ${job.max_attempts}`],
      ["Priority", String(job.priority)],
      ["Timeout", span(job.timeout)],
    ];
    $("detail-facts").replaceChildren(...facts.flatMap(([term, value]) =>
      [el("dt", {}, term), el("dd", {}, value)]));
  }

  tick() {
    const job = this.id && this.store.jobs.get(this.id);
    if (job && this.dialog.open && ACTIVE.has(job.state)) this.renderFacts(job);
  }

  /** Replay the job's stream from its first event, then follow it until it ends. */
  follow(job) {
    const stream = new EventSource(job.links.events);
    this.stream = stream;
    const status = $("detail-history-status");
    for (const name of EVENTS) {
      stream.addEventListener(name, (message) => {
        const event = JSON.parse(message.data);
        if (event.seq <= this.lastSeq) return;
        this.lastSeq = event.seq;
        this.addHistory(event);
        this.store.apply({ ...event, job_id: event.job_id || job.id });
        if (TERMINAL.has(event.event)) this.stop();  // the server ends the stream too
      });
    }
    stream.addEventListener("open", () => { status.textContent = ""; });
    stream.addEventListener("error", () => {
      status.textContent = stream.readyState === EventSource.CLOSED ? "" : "reconnecting…";
    });
  }

  stop() {
    if (this.stream) this.stream.close();
    this.stream = null;
    $("detail-history-status").textContent = "";
  }

  addHistory(event) {
    const item = el("li", { class: `history-item history-${event.event}` },
      el("span", { class: "history-seq" }, `#${event.seq}`),
      el("time", { class: "history-time", datetime: event.at, title: localTime(event.at) },
        clock(event.at)),
      el("span", { class: `badge badge-small badge-${event.event}` }, event.event),
      el("span", { class: "history-text" }, describe(event)));
    $("detail-history").append(item);
  }

  /** Submit a failed or cancelled job again; the new job's details replace these. */
  async rerun() {
    const job = this.store.jobs.get(this.id);
    if (!job || this.busy) return;
    const status = $("detail-action-status");
    this.busy = true;
    this.render(job);
    status.textContent = "Submitting it again…";
    try {
      const fresh = this.store.upsert(await api(
        `${API}/jobs/${encodeURIComponent(job.id)}/rerun`, { method: "POST" }));
      status.textContent = `Re-run as job ${shortId(fresh.id)}.`;
      announce(`Re-run as ${fresh.type} job ${shortId(fresh.id)}.`);
      this.onRerun(fresh.id);
    } catch (error) {
      status.textContent = `Could not re-run: ${error.message}`;
    } finally {
      this.busy = false;
      const current = this.store.jobs.get(this.id);
      if (current) this.render(current);
    }
  }

  /** Delete a finished job; the first click asks, the second deletes. */
  async remove() {
    const job = this.store.jobs.get(this.id);
    if (!job || this.busy) return;
    const status = $("detail-action-status");
    if (!this.confirmDelete) {
      this.confirmDelete = true;
      status.textContent = "This removes the job, its events and its result. Click again to "
        + "delete it.";
      this.render(job);
      return;
    }
    this.busy = true;
    this.render(job);
    try {
      await api(job.links.self, { method: "DELETE" });
      announce(`${job.type} job ${shortId(job.id)} deleted.`);
      this.close();
      this.store.remove(job.id);
      this.onDeleted(job.id);
    } catch (error) {
      this.busy = false;
      this.confirmDelete = false;
      status.textContent = error instanceof ApiError && error.status === 404
        ? "This job was already deleted." : `Could not delete: ${error.message}`;
      this.render(this.store.jobs.get(this.id) || job);
    }
  }

  /** Copy the full id; where the clipboard is not offered (a page not served over HTTPS or
   * from loopback), select it so that the usual copy keys take it. */
  async copyId() {
    const status = $("detail-action-status");
    try {
      await navigator.clipboard.writeText(this.id);
      status.textContent = "Copied the job id.";
    } catch {
      const range = document.createRange();
      range.selectNodeContents($("detail-id"));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      status.textContent = "The id is selected: press Ctrl+C (⌘C) to copy it.";
    }
  }

  async cancel() {
    const job = this.store.jobs.get(this.id);
    if (!job) return;
    this.cancelling = true;
    this.render(job);
    const status = $("detail-action-status");
    try {
      status.textContent = "Asked the job to stop…";
      const answer = await api(job.links.cancel, { method: "POST" });
      if (answer) this.store.upsert(answer);
    } catch (error) {
      this.cancelling = false;
      status.textContent = error instanceof ApiError && error.status === 409
        ? "This job has already finished." : `Could not cancel: ${error.message}`;
      this.render(this.store.jobs.get(this.id) || job);
    }
  }
}
