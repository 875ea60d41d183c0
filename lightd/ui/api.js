// The one door to lightd: REST with the bearer token and the vendor media type,
// WebSocket URLs with the token in the query (browsers cannot set headers on them),
// and uploads through XMLHttpRequest for their progress events. Same origin only.

export const VENDOR = "application/vnd.pkglatv1+json";
const TOKEN_KEY = "lightd.console.token";
const SCOPE_KEY = "lightd.console.scope";

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY) || ""; },
  // A minted token is limited to one container's socket; "" for the master token.
  get scope() { return sessionStorage.getItem(SCOPE_KEY) || ""; },
  get master() { return this.token !== "" && this.scope === ""; },
  save(token, scope) {
    sessionStorage.setItem(TOKEN_KEY, token);
    if (scope) sessionStorage.setItem(SCOPE_KEY, scope);
    else sessionStorage.removeItem(SCOPE_KEY);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(SCOPE_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let unauthorized = () => {};
/** Called with the daemon's message whenever a REST call answers 401. */
export function onUnauthorized(handler) { unauthorized = handler; }

async function errorOf(response) {
  let message = `HTTP ${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") message = body.error;
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(response.status, message);
}

function headers(extra = {}, token = session.token) {
  return { Authorization: `Bearer ${token}`, Accept: VENDOR, ...extra };
}

/**
 * One REST call. `json` is sent as a JSON body; `as` picks the answer's reading:
 * "json" (default), "text" or "blob". Errors are ApiError with the daemon's own words.
 */
export async function api(method, path, { json, body, as = "json", token } = {}) {
  const extra = {};
  let payload = body;
  if (json !== undefined) {
    extra["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(extra, token),
      body: payload,
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
  } catch (err) {
    throw new ApiError(0, `lightd did not answer: ${err.message}`);
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && token === undefined) unauthorized(error.message);
    throw error;
  }
  if (as === "text") return response.text();
  if (as === "blob") return response.blob();
  return response.json();
}

/** `ws://` or `wss://` URL of a socket route on this origin, with the token. */
export function socketUrl(path, params = {}, token = session.token) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", token);
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, String(value));
  return url.href;
}

/** Streams `file` to `PUT path`; `progress(sent, total)` follows it. Resolves to the answer. */
export function upload(path, file, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", path);
    for (const [key, value] of Object.entries(headers({ "Content-Type": "application/octet-stream" }))) {
      xhr.setRequestHeader(key, value);
    }
    xhr.responseType = "text";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) progress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* keep null */ }
      if (xhr.status >= 200 && xhr.status < 300) {
        progress(file.size, file.size);
        resolve(body);
        return;
      }
      const message = body && typeof body.error === "string" ? body.error : `HTTP ${xhr.status}`;
      if (xhr.status === 401) unauthorized(message);
      reject(new ApiError(xhr.status, message));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "Upload failed: lightd did not answer")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "Upload cancelled")));
    xhr.send(file);
  });
}
