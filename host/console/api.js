// The console's only way to lila: the same /api as the Portal, with the
// operator's token. The token lives in sessionStorage (gone when the tab
// closes), never in a URL, and is never written to the console or a log.

const TOKEN_KEY = 'lila.console.token';

/** An API refusal or failure, with the API's `error` sentence. */
export class ApiError extends Error {
  constructor(status, sentence) {
    super(sentence);
    this.status = status;
  }
}

let unauthorizedListener = () => {};

/** Called with the API's sentence when a call gets 401 (an expired or revoked token). */
export function onUnauthorized(listener) {
  unauthorizedListener = listener;
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export function authorization(candidate = token()) {
  return { Authorization: `Bearer ${candidate ?? ''}` };
}

async function call(method, path, body, candidate) {
  const headers = { ...authorization(candidate), Accept: 'application/json' };
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `lila cannot be reached (${e.message}). Is it running?`);
  }
  let json = null;
  try {
    json = await response.json();
  } catch {
    // Not JSON: described below from the status.
  }
  if (!response.ok || json === null || json.success === false) {
    const sentence = json && typeof json.error === 'string'
      ? json.error
      : `lila answered ${response.status} ${response.statusText} without an explanation.`;
    throw new ApiError(response.status, sentence);
  }
  return json;
}

/** One API call with the signed-in token; a 401 signs the operator out. */
export async function api(method, path, body) {
  try {
    return await call(method, path, body, token());
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      forgetToken();
      unauthorizedListener(e.message);
    }
    throw e;
  }
}

/**
 * Checks `candidate` before keeping it. `GET /api/plugins` answers 200 only
 * to an operator token, 403 to a tenant's, and 401 to a bad one, so it tells
 * the three apart without decoding the token in the browser.
 */
export async function signIn(candidate) {
  const trimmed = candidate.trim().replace(/^Bearer\s+/i, '');
  if (trimmed === '') throw new ApiError(0, 'Paste an operator token first.');
  try {
    await call('GET', '/api/plugins', undefined, trimmed);
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) {
      throw new ApiError(403, 'This is a tenant\'s token. The console is for the operators who run lila; '
        + 'tenants manage their sessions in the Portal. Sign in with an operator token '
        + '(lila token --operator).');
    }
    throw e;
  }
  sessionStorage.setItem(TOKEN_KEY, trimmed);
}

/** `GET /metrics` (Prometheus text; no token needed). */
export async function metricsText() {
  let response;
  try {
    response = await fetch('/metrics', { cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, `lila cannot be reached (${e.message}). Is it running?`);
  }
  if (!response.ok) throw new ApiError(response.status, `/metrics answered ${response.status}.`);
  return response.text();
}

/** Path of a phone's API resource; phones are digits, but never trust a hash. */
export function sessionPath(phone, rest = '') {
  return `/api/sessions/${encodeURIComponent(phone)}${rest}`;
}
