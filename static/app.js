// The sse-jobs dashboard: lists jobs and keeps them live through ONE EventSource on the
// global stream, submits jobs through a form generated from the job types, and shows a
// job's details. No polling: the only repeating timer redraws ages and durations.

import { API, api, onUnauthorized, token } from "./api.js";
import { $ } from "./dom.js";
import { DetailView } from "./detail.js";
import { Filters } from "./filters.js";
import { SubmitForm } from "./form.js";
import { JobStore, JobTable } from "./jobs.js";

const EVENTS = ["queued", "processing", "progress", "retrying", "completed", "failed",
  "cancelled"];
const PAGE = 50;

const store = new JobStore();
const filters = new Filters();
const openJob = (id) => { location.hash = jobHash(id); };
const table = new JobTable(store, { onOpen: openJob, matches: (job) => filters.matches(job),
  filtered: () => filters.active });
const detail = new DetailView(store, {
  onClose: () => {
    if (location.hash.startsWith("#/jobs/")) {
      history.replaceState(null, "", location.pathname + location.search);
    }
  },
  onRerun: openJob,
  onDeleted: () => filters.load(),
});
// A job that changes state changes the counts beside the filters (progress does not),
// and so does a copy fetched for a job new here or one whose events we missed: it may
// already be past every event that was waiting for it.
store.addEventListener("change", (e) => {
  const { job, event, before } = e.detail;
  if (event ? event.event !== "progress" : before !== job.state) filters.changed();
});
filters.addEventListener("change", () => refresh());
const form = new SubmitForm({ onSubmitted: (job) => store.upsert(job) });

const jobHash = (id) => `#/jobs/${encodeURIComponent(id)}`;

// -- the connection indicator ---------------------------------------------------------

const CONNECTION_TEXT = { connecting: "Connecting…", live: "Live",
  reconnecting: "Reconnecting…" };

function connection(state) {
  const node = $("connection");
  if (node.dataset.state === state) return;
  node.dataset.state = state;
  $("connection-text").textContent = CONNECTION_TEXT[state];
  $("reconnect-banner").hidden = state !== "reconnecting";
}

// -- the global stream ----------------------------------------------------------------

/**
 * One EventSource on the listing's links.events, opened right after the listing so that
 * nothing that changes in between is missed. When it drops, EventSource reconnects by
 * itself and sends Last-Event-ID, so the server replays exactly what was missed. Only if
 * EventSource gives up (an error answer, such as an expired stream token) does the page
 * list the jobs again and open a new stream.
 */
class GlobalStream {
  constructor() {
    this.source = null;
    this.retry = null;
    this.backoff = 1000;
  }

  open(url) {
    this.close();
    const source = new EventSource(url);
    this.source = source;
    const onEvent = (message) => store.apply(JSON.parse(message.data));
    for (const name of EVENTS) source.addEventListener(name, onEvent);
    source.addEventListener("open", () => {
      this.backoff = 1000;
      connection("live");
    });
    source.addEventListener("error", () => {
      connection("reconnecting");
      if (source.readyState === EventSource.CLOSED && this.source === source) {
        this.source = null;
        this.retry = setTimeout(() => refresh(), this.backoff);
        this.backoff = Math.min(this.backoff * 2, 30000);
      }
    });
  }

  close() {
    clearTimeout(this.retry);
    if (this.source) this.source.close();
    this.source = null;
  }
}

const stream = new GlobalStream();
let nextCursor = null;
let listings = 0;  // the newest listing wins: a slower, older one (other filters) is dropped

/** List the newest jobs and follow the global stream from the moment of the listing. */
async function refresh() {
  const listing = ++listings;
  try {
    const page = await api(`${API}/jobs?limit=${PAGE}${filters.query()}`);
    if (listing !== listings) return;
    store.clear();
    $("jobs-error").hidden = true;
    $("jobs-loading").hidden = true;
    page.jobs.forEach((job) => store.upsert(job));
    table.summarise();
    setCursor(page.next);
    stream.open(page.links.events);
    filters.load();
    showWho();
    if (!form.types.size) loadForm();  // the server was not there when the page opened
  } catch (error) {
    if (listing !== listings) return;
    connection("reconnecting");
    $("jobs-error").textContent = `Could not list the jobs: ${error.message} Trying again…`;
    $("jobs-error").hidden = false;
    stream.retry = setTimeout(() => refresh(), stream.backoff);
    stream.backoff = Math.min(stream.backoff * 2, 30000);
  }
}

function setCursor(cursor) {
  nextCursor = cursor;
  $("load-more").hidden = !cursor;
}

async function loadMore() {
  if (!nextCursor) return;
  const button = $("load-more");
  button.disabled = true;
  try {
    const page = await api(`${API}/jobs?limit=${PAGE}&cursor=${encodeURIComponent(nextCursor)}`
      + filters.query());
    page.jobs.forEach((job) => store.upsert(job));
    setCursor(page.next);
  } catch (error) {
    $("jobs-error").textContent = `Could not load older jobs: ${error.message}`;
    $("jobs-error").hidden = false;
  } finally {
    button.disabled = false;
  }
}

// -- signing in (only when the server answers 401) ------------------------------------

/** Say who is signed in; with no API tokens on the server there is nobody to sign out. */
async function showWho() {
  try {
    const me = await api(`${API}/whoami`);
    $("signed-in").textContent = me.tokens ? `Signed in as ${me.principal}` : "";
    $("signed-in").hidden = !me.tokens;
    $("sign-out").hidden = !me.tokens;
  } catch (error) {
    console.warn("could not ask who is signed in", error);
  }
}

function askForToken(refused) {
  const dialog = $("signin");
  const input = $("signin-token");
  const error = $("signin-error");
  error.hidden = !refused;
  error.textContent = refused ? "That token was not accepted. Check it and try again." : "";
  input.setAttribute("aria-invalid", refused ? "true" : "false");
  input.value = "";
  return new Promise((resolve) => {
    const submit = (e) => {
      e.preventDefault();
      const value = input.value.trim();
      if (!value) {
        error.textContent = "Enter your API token.";
        error.hidden = false;
        input.focus();
        return;
      }
      token.set(value);
      $("signin-form").removeEventListener("submit", submit);
      dialog.close();
      resolve();
    };
    $("signin-form").addEventListener("submit", submit);
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}

// Without a token nothing works: the sign-in dialog cannot be dismissed.
$("signin").addEventListener("cancel", (e) => e.preventDefault());
$("sign-out").addEventListener("click", () => {
  token.clear();
  location.reload();
});
onUnauthorized(askForToken);

// -- routing: #/jobs/ID opens a job's details -----------------------------------------

function route() {
  const match = location.hash.match(/^#\/jobs\/([^/]+)$/);
  if (match) detail.open(decodeURIComponent(match[1]));
  else detail.close();
}

window.addEventListener("hashchange", route);

// -- on a phone the form folds away, so the jobs come first ---------------------------

const narrow = window.matchMedia("(max-width: 44rem)");

function foldForm(folded) {
  $("submit-card").classList.toggle("collapsed", folded);
  $("submit-toggle").setAttribute("aria-expanded", String(!folded));
  $("submit-toggle").textContent = folded ? "Show form" : "Hide form";
}

$("submit-toggle").addEventListener("click", () => {
  foldForm(!$("submit-card").classList.contains("collapsed"));
});
narrow.addEventListener("change", () => foldForm(narrow.matches));
foldForm(narrow.matches);
$("load-more").addEventListener("click", loadMore);

// Ages and running durations move with the clock; this redraws them, it asks no server.
setInterval(() => {
  table.tickAll();
  detail.tick();
}, 1000);

function loadForm() {
  form.load().then(() => { $("form-error").hidden = true; }, (error) => {
    $("form-error").textContent = `Could not load the job types: ${error.message}`;
    $("form-error").hidden = false;
  });
}

async function start() {
  loadForm();
  await refresh();
  route();
}

start();
