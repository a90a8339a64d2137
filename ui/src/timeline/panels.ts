// What the library and the job queue show instead of a list: locked (the server wants the API
// token), loading, empty, or nothing matching the filters.

/** Shown in place of the library / the jobs while reads are refused for want of the token. */
export const LOCKED_LIBRARY = "Enter the API token to see the library.";
export const LOCKED_JOBS = "Enter the API token to see the jobs.";

export type LibraryView = "locked" | "loading" | "empty" | "no-match" | "list";

export interface LibraryInput {
  /** Reads are refused for want of a valid token (nothing known about the library). */
  locked: boolean;
  loading: boolean;
  /** Assets loaded and shown. */
  shown: number;
  /** Assets matching the filters in all. */
  total: number;
  filtered: boolean;
}

/** A locked library is not an empty one: the token message wins over loading and the empty states. */
export function libraryView({ locked, loading, shown, total, filtered }: LibraryInput): LibraryView {
  if (locked) return "locked";
  if (loading && shown === 0) return "loading";
  if (total === 0 && !filtered) return "empty";
  if (shown === 0) return "no-match";
  return "list";
}

export type QueueView = "locked" | "empty" | "list";

export function queueView(locked: boolean, jobs: number): QueueView {
  if (locked) return "locked";
  return jobs === 0 ? "empty" : "list";
}
