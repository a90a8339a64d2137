import { afterEach, describe, expect, it, vi } from "vitest";
import { authHeaders, getToken, isAuthNeeded, onAuthNeeded, onOpenSettings, onTokenChange, openSettings, reportAuthNeeded, setToken } from "./settings";

describe("the API token in Settings", () => {
  afterEach(() => {
    setToken("");
    vi.unstubAllGlobals();
  });

  it("keeps the token in localStorage and sends it as a bearer header", () => {
    const store = new Map<string, string>();
    vi.stubGlobal("localStorage", {
      getItem: (k: string) => store.get(k) ?? null,
      setItem: (k: string, v: string) => store.set(k, v),
      removeItem: (k: string) => store.delete(k),
    });
    expect(authHeaders()).toEqual({});
    setToken("s3cret");
    expect(store.get("mpr.apiToken")).toBe("s3cret");
    expect(authHeaders()).toEqual({ Authorization: "Bearer s3cret" });
    setToken("");
    expect(store.has("mpr.apiToken")).toBe(false);
    expect(authHeaders()).toEqual({});
  });

  it("keeps the token for the page when storage is disabled", () => {
    // Node has no localStorage: the same as a browser that refuses storage
    setToken("for-this-page");
    expect(getToken()).toBe("for-this-page");
    expect(authHeaders()).toEqual({ Authorization: "Bearer for-this-page" });
  });

  it("tells listeners when a token is saved (the UIs reload their data), until they unsubscribe", () => {
    const seen: string[] = [];
    const stop = onTokenChange(() => seen.push(getToken()));
    setToken("one");
    setToken("two");
    stop();
    setToken("three");
    expect(seen).toEqual(["one", "two"]);
  });

  it("passes 'token needed' and 'open Settings' between components", () => {
    let needed = 0;
    let opened = 0;
    const stops = [onAuthNeeded(() => needed++), onOpenSettings(() => opened++)];
    reportAuthNeeded();
    openSettings();
    openSettings();
    for (const stop of stops) stop();
    reportAuthNeeded();
    expect([needed, opened]).toEqual([1, 2]);
  });

  it("remembers that the token is needed until one is saved (the panels show 'locked')", () => {
    setToken("");
    expect(isAuthNeeded()).toBe(false);
    reportAuthNeeded();
    expect(isAuthNeeded()).toBe(true);
    setToken("the-token");
    expect(isAuthNeeded()).toBe(false);
  });
});
