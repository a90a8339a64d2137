import { describe, expect, it } from "vitest";
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, appendPage, pageSizeFrom, showingText } from "./paging";

describe("pageSizeFrom", () => {
  it("reads ?pageSize=N from the page URL", () => {
    expect(pageSizeFrom("?pageSize=3")).toBe(3);
    expect(pageSizeFrom("?asset=x&pageSize=250")).toBe(250);
  });

  it("caps large sizes and ignores anything that is not a positive integer", () => {
    expect(pageSizeFrom("?pageSize=99999")).toBe(MAX_PAGE_SIZE);
    for (const bad of ["", "?pageSize=", "?pageSize=0", "?pageSize=-4", "?pageSize=2.5", "?pageSize=ten", "?pageSize=1e3"]) {
      expect(pageSizeFrom(bad)).toBe(DEFAULT_PAGE_SIZE);
    }
    expect(pageSizeFrom("?pageSize=x", 7)).toBe(7);
  });
});

describe("appendPage", () => {
  const row = (id: string) => ({ id });

  it("appends the next page in order", () => {
    expect(appendPage([row("a"), row("b")], [row("c"), row("d")]).map((r) => r.id)).toEqual(["a", "b", "c", "d"]);
  });

  it("drops rows already shown (an asset added between two pages shifts the offsets)", () => {
    expect(appendPage([row("a"), row("b")], [row("b"), row("c")]).map((r) => r.id)).toEqual(["a", "b", "c"]);
  });

  it("does not change the list it was given", () => {
    const shown = [row("a")];
    appendPage(shown, [row("b")]);
    expect(shown).toEqual([row("a")]);
  });
});

describe("showingText", () => {
  it("says how many of how many", () => {
    expect(showingText(100, 2345)).toBe("Showing 100 of 2,345 assets");
    expect(showingText(3, 3, "ready videos")).toBe("Showing 3 of 3 ready videos");
    expect(showingText(0, 0)).toBe("Showing 0 of 0 assets");
  });

  it("never shows more than the total (a deletion lowers the total first)", () => {
    expect(showingText(5, 4)).toBe("Showing 4 of 4 assets");
  });
});
