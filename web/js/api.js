// The page's only way to the farm: the HTTP API (docs/api.md), with the
// signed-in token as a bearer header. Event streams are read with fetch
// (EventSource cannot send a header); downloads use short-lived signed links
// (POST /api/v1/links) so the browser can save them natively, streaming.

const KEY = 'tessera.token';

/** An API error: the server's message and code, and the HTTP status. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY);
}

export function setToken(value, remember) {
  clearToken();
  (remember ? localStorage : sessionStorage).setItem(KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
  for (const url of blobs.values()) url.then(u => URL.revokeObjectURL(u), () => {});
  blobs.clear();
}

function authHeaders(extra = {}) {
  const t = token();
  return t ? { Authorization: `Bearer ${t}`, ...extra } : extra;
}

/** Turns a failed response into an ApiError (the API's errors are JSON);
 * a 401 also tells the page the session is over, unless `quiet`. */
async function failure(response, quiet = false) {
  let code = 'http_' + response.status;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && typeof body.error === 'string') {
      message = body.error;
      code = body.code || code;
    }
  } catch (_) { /* not JSON: keep the status line */ }
  if (response.status === 401 && !quiet) window.dispatchEvent(new CustomEvent('tessera:unauthorized', { detail: message }));
  return new ApiError(response.status, code, message);
}

// A farm on PostgreSQL has several coordinators, and any of them serves the
// API. The page starts with its own ('' is this page's origin), learns the
// others from the health check, and when the one it talks to is gone (no
// answer) or stands by (503, code "standby") it tries the next, and stays
// with the first that answers: a job is still followed when the
// coordinator that served this page dies. They allow this page's origin
// (CORS) because it is one of the farm's.
let bases = [''];
let current = 0;

/** The farm's coordinators, from this one's health check (a farm of one
 * lists none). Called at start and whenever a request had to move on. */
export async function learnCoordinators() {
  try {
    const response = await fetch(bases[current] + '/api/v1/health');
    const health = await response.json();
    if (!Array.isArray(health.coordinators)) return;
    const here = bases[current] || location.origin;
    const urls = health.coordinators.map(c => c.url).filter(u => typeof u === 'string' && u !== location.origin);
    const next = ['', ...new Set(urls)];
    current = Math.max(0, next.indexOf(here === location.origin ? '' : here));
    bases = next;
  } catch (_) { /* keep what we know */ }
}

/** The coordinator the page talks to now ('' for its own origin). */
export function base() {
  return bases[current];
}

/** fetch() against the API, at the current coordinator or, when it is gone
 * or standing by, the next that answers; throws ApiError on a non-2xx answer. */
export async function request(path, { method = 'GET', body, headers = {}, signal } = {}) {
  let last = null;
  for (let i = 0; i < bases.length; i++) {
    const at = (current + i) % bases.length;
    let response;
    try {
      response = await fetch(bases[at] + path, { method, body, signal, headers: authHeaders(headers) });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      last = new ApiError(0, 'unreachable', 'The coordinator cannot be reached: is it running?');
      continue;
    }
    if (response.status === 503 && bases.length > 1) {
      last = await failure(response);
      if (last.code === 'standby') continue;
      throw last;
    }
    if (at !== current) {
      current = at;
      learnCoordinators();
    }
    if (!response.ok) throw await failure(response);
    return response;
  }
  throw last;
}

/** Checks a token before signing in with it (GET /api/v1/status). */
export async function check(value) {
  let response;
  try {
    response = await fetch(base() + '/api/v1/status', { headers: { Authorization: `Bearer ${value}` } });
  } catch (_) {
    throw new ApiError(0, 'unreachable', 'The coordinator cannot be reached: is it running?');
  }
  if (!response.ok) throw await failure(response, true);
}

export async function json(path, options) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

export function post(path, value, options = {}) {
  return json(path, {
    ...options,
    method: 'POST',
    body: value === undefined ? undefined : JSON.stringify(value),
    headers: value === undefined ? {} : { 'Content-Type': 'application/json' },
  });
}

/**
 * A multipart upload with progress (fetch cannot report upload progress):
 * resolves with the parsed JSON body, rejects with ApiError.
 */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', base() + path);
    const t = token();
    if (t) xhr.setRequestHeader('Authorization', `Bearer ${t}`);
    xhr.responseType = 'json';
    if (onProgress) xhr.upload.onprogress = e => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject(new ApiError(0, 'unreachable', 'The upload failed: the coordinator cannot be reached.'));
    xhr.onload = () => {
      const body = xhr.response;
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
      const message = body && typeof body.error === 'string' ? body.error : `${xhr.status} ${xhr.statusText}`;
      if (xhr.status === 401) window.dispatchEvent(new CustomEvent('tessera:unauthorized', { detail: message }));
      reject(new ApiError(xhr.status, (body && body.code) || 'http_' + xhr.status, message));
    };
    xhr.send(form);
  });
}

// Object URLs of images the API served (tile previews, thumbnails), by path.
const blobs = new Map();

/** An object URL for an image behind the API (cached for the session). */
export function imageUrl(path) {
  let url = blobs.get(path);
  if (!url) {
    url = request(path).then(r => r.blob()).then(b => URL.createObjectURL(b));
    url.catch(() => blobs.delete(path));
    blobs.set(path, url);
  }
  return url;
}

/** An object URL for an image that changes under one path (a progressive
 * frame's preview): fetched every time, not cached. */
export async function freshImageUrl(path, signal) {
  const response = await request(path, { signal });
  return URL.createObjectURL(await response.blob());
}

/** A decoded image (for a canvas) from the API. */
export async function bitmap(path, signal) {
  const response = await request(path, { signal });
  return createImageBitmap(await response.blob());
}

/**
 * Saves a frame file or archive through the browser's own download (so a
 * large ZIP streams to disk): asks for a signed link, then follows it.
 */
export async function download(path) {
  const link = await post('/api/v1/links', { path });
  const a = document.createElement('a');
  // A link is signed by the coordinator that made it, and works there.
  a.href = link.url.startsWith('/') ? base() + link.url : link.url;
  a.download = '';
  a.rel = 'noopener';
  document.body.append(a);
  a.click();
  a.remove();
}

/**
 * Follows a server-sent event stream until `signal` aborts, calling
 * `onEvent(name, data)`; reconnects with backoff, and calls
 * `onEvent('reconnected')` after a gap so views can refresh what they missed.
 */
export async function follow(path, onEvent, signal) {
  let delay = 500;
  let gap = false;
  while (!signal.aborted) {
    try {
      const response = await request(path, { signal, headers: { Accept: 'text/event-stream' } });
      if (gap) onEvent('reconnected', null);
      delay = 500;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'event') name = text;
            else if (field === 'data') data.push(text);
          }
          if (!data.length) continue;
          let parsed = null;
          try { parsed = JSON.parse(data.join('\n')); } catch (_) { continue; }
          onEvent(name, parsed);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && (e.status === 401 || e.status === 403 || e.status === 404)) {
        onEvent('error', e);
        return;
      }
    }
    if (signal.aborted) return;
    gap = true;
    await new Promise(resolve => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
  }
}
