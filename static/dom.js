// Small DOM and formatting helpers shared by the dashboard's modules.

/** Create an element: el("p", {class: "hint"}, "text", child). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

export const $ = (id) => document.getElementById(id);

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);
export const ACTIVE = new Set(["queued", "processing"]);

/** "42%" for a progress value; whole numbers except just below 100. */
export function percent(value) {
  const n = Math.max(0, Math.min(100, Number(value) || 0));
  return `${n >= 99 && n < 100 ? n.toFixed(1) : Math.floor(n)}%`;
}

const time = (iso) => (iso ? Date.parse(iso) : NaN);

/** "just now", "12 s ago", "5 min ago", "3 h ago", "2 d ago". */
export function age(iso, now = Date.now()) {
  const seconds = Math.max(0, (now - time(iso)) / 1000);
  if (Number.isNaN(seconds)) return "–";
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

/** A span of seconds: "0.4 s", "12 s", "3 min 05 s", "2 h 03 min". */
export function span(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  const pad = (n) => String(Math.floor(n)).padStart(2, "0");
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${pad(seconds % 60)} s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${pad((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
}

/** How long a job ran: start to finish, or start to now while it runs. */
export function duration(job, now = Date.now()) {
  const started = time(job.started_at);
  if (Number.isNaN(started)) return "–";
  const end = job.finished_at ? time(job.finished_at) : ACTIVE.has(job.state) ? now : NaN;
  return span((end - started) / 1000);
}

/** A local date and time for a tooltip or a detail list. */
export function localTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

/** "10:02:03.512" for the event history. */
export function clock(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.` +
    pad(date.getMilliseconds(), 3);
}

/** The tail of a job id, enough to tell jobs apart at a glance. */
export const shortId = (id) => `…${id.slice(-6)}`;

/** One line describing a job error. */
export function errorText(error) {
  if (!error) return "";
  const kind = error.exception ? `${error.type} (${error.exception})` : error.type;
  return error.message ? `${kind}: ${error.message}` : kind;
}

/** Tell screen readers about something that happened elsewhere on the page. */
export function announce(text) {
  const region = $("announcer");
  region.textContent = "";
  // A new text node in a fresh task is announced even when the text repeats.
  setTimeout(() => { region.textContent = text; }, 50);
}
