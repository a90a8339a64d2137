import { describe, expect, it } from "vitest";
import { libraryView, queueView } from "./panels";

describe("libraryView", () => {
  const base = { locked: false, loading: false, shown: 0, total: 0, filtered: false };

  it("says the library is locked, not empty, while reads are refused for the token", () => {
    expect(libraryView({ ...base, locked: true })).toBe("locked");
    // the periodic re-read while locked does not turn it into "loading", nor a filter into "no match"
    expect(libraryView({ ...base, locked: true, loading: true })).toBe("locked");
    expect(libraryView({ ...base, locked: true, filtered: true })).toBe("locked");
    // a token that stopped working (server restarted with another) hides what was shown
    expect(libraryView({ ...base, locked: true, shown: 3, total: 3 })).toBe("locked");
  });

  it("once unlocked: loading, empty, no match or the list", () => {
    expect(libraryView({ ...base, loading: true })).toBe("loading");
    expect(libraryView(base)).toBe("empty");
    expect(libraryView({ ...base, filtered: true })).toBe("no-match");
    expect(libraryView({ ...base, filtered: true, total: 0, shown: 0, loading: false })).toBe("no-match");
    expect(libraryView({ ...base, shown: 2, total: 5 })).toBe("list");
    expect(libraryView({ ...base, shown: 2, total: 5, loading: true })).toBe("list"); // "Load more" keeps the list
  });
});

describe("queueView", () => {
  it("is locked while reads are refused, else empty or the list", () => {
    expect(queueView(true, 0)).toBe("locked");
    expect(queueView(true, 4)).toBe("locked");
    expect(queueView(false, 0)).toBe("empty");
    expect(queueView(false, 4)).toBe("list");
  });
});
