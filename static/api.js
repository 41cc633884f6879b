// The sse-jobs HTTP API: JSON in and out, RFC 9457 problems as ApiError, and the API
// token, which is kept in sessionStorage and only ever sent in the Authorization header.

const TOKEN_KEY = "sse-jobs.api-token";

export const API = "/api/v1";

/** An error answer of the API (or no answer at all: status 0). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }

  /** The 422 list of {field, message}. */
  get fieldErrors() {
    return Array.isArray(this.problem.errors) ? this.problem.errors : [];
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

// Called with the token that was refused (or null); resolves once a new one is stored.
let askForToken = null;
let asking = null;

/** Install the sign-in flow that runs when the API answers 401. */
export function onUnauthorized(handler) {
  askForToken = handler;
}

function signIn(refused) {
  if (!asking) {
    asking = Promise.resolve(askForToken(refused)).finally(() => { asking = null; });
  }
  return asking;
}

/** A request to the API; resolves to the parsed body (null for 204), throws ApiError. */
export async function api(path, { method = "GET", body, headers = {} } = {}) {
  for (;;) {
    const sent = token.get();
    const response = await send(path, method, body, headers, sent);
    if (response.status === 401 && askForToken) {
      // 401 means nothing was done, so asking for a token and sending again is safe.
      await signIn(sent);
      continue;
    }
    return parse(response);
  }
}

async function send(path, method, body, extraHeaders, bearer) {
  const headers = { Accept: "application/json", ...extraHeaders };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  try {
    return await fetch(path, {
      method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, { title: "No connection",
      detail: "The server could not be reached. Check that it is running and try again." });
  }
}

async function parse(response) {
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  const json = type.includes("json") ? await response.json().catch(() => null) : null;
  if (response.ok) return json;
  throw new ApiError(response.status, json && typeof json === "object" ? json : {
    title: response.statusText || `HTTP ${response.status}`,
    detail: `The server answered ${response.status} ${response.statusText}.`,
  });
}

/** A fresh Idempotency-Key, so that sending a submission again never makes two jobs. */
export function idempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();  // secure contexts only
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
