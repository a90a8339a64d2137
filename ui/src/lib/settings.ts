// The API token (MPR_API_TOKEN on the server), kept in this browser's localStorage.
const KEY = "mpr.apiToken";
let pageToken: string | null = null; // when localStorage is disabled, the token lives only for this page

export function getToken(): string {
  try {
    return pageToken ?? localStorage.getItem(KEY) ?? "";
  } catch {
    return pageToken ?? "";
  }
}

/** Keep the token and tell the page (listeners of onTokenChange reload their data with it). */
export function setToken(token: string): void {
  try {
    if (token) localStorage.setItem(KEY, token);
    else localStorage.removeItem(KEY);
    pageToken = null;
  } catch {
    pageToken = token || null;
  }
  authNeeded = false;
  events.dispatchEvent(new Event(TOKEN_CHANGED));
}

// The page's own notices (token saved, token needed, open Settings), between components that do not
// share props; an EventTarget of this module, so the same code runs in Node (unit tests).
const events = new EventTarget();
const TOKEN_CHANGED = "mpr:token-changed";
const AUTH_NEEDED = "mpr:auth-needed";
const OPEN_SETTINGS = "mpr:open-settings";

function listen(name: string, callback: () => void): () => void {
  events.addEventListener(name, callback);
  return () => events.removeEventListener(name, callback);
}

/** Call ``callback`` after a token is saved; returns the unsubscribe function. */
export function onTokenChange(callback: () => void): () => void {
  return listen(TOKEN_CHANGED, callback);
}

// True from a read refused for want of the token until a token is saved: the panels say the library is
// locked rather than empty.
let authNeeded = false;

export function isAuthNeeded(): boolean {
  return authNeeded;
}

/** Tell the page the server refused a request for want of the token (the prompt appears). */
export function reportAuthNeeded(): void {
  authNeeded = true;
  events.dispatchEvent(new Event(AUTH_NEEDED));
}

export function onAuthNeeded(callback: () => void): () => void {
  return listen(AUTH_NEEDED, callback);
}

/** Open the Settings panel (where the token is entered). */
export function openSettings(): void {
  events.dispatchEvent(new Event(OPEN_SETTINGS));
}

export function onOpenSettings(callback: () => void): () => void {
  return listen(OPEN_SETTINGS, callback);
}

/** Headers to send with every API call: Authorization when a token is stored. */
export function authHeaders(): Record<string, string> {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}
