// Library paging: the server filters and counts; the UI asks for one page at a time.

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

/** The library's page size: ``?pageSize=N`` in the page URL (1–1000), else ``fallback``. */
export function pageSizeFrom(search: string, fallback = DEFAULT_PAGE_SIZE): number {
  const raw = new URLSearchParams(search).get("pageSize");
  const n = raw !== null && /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
  return Number.isInteger(n) && n >= 1 ? Math.min(n, MAX_PAGE_SIZE) : fallback;
}

/** ``shown`` followed by the rows of ``page`` not already in it (offset paging can repeat a row
 * when assets are added between two pages). */
export function appendPage<T extends { id: string }>(shown: readonly T[], page: readonly T[]): T[] {
  const seen = new Set(shown.map((x) => x.id));
  return [...shown, ...page.filter((x) => !seen.has(x.id))];
}

/** "Showing 100 of 2,345 assets" */
export function showingText(shown: number, total: number, noun = "assets"): string {
  const n = (v: number) => v.toLocaleString("en-US");
  return `Showing ${n(Math.min(shown, total))} of ${n(total)} ${noun}`;
}
