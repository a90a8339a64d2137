// The job queue's fallback refresh: when live events cannot arrive (a job run by another
// process without Redis), the list is re-read now and then; this merges such a re-read into
// what the live stream already showed.
import { FINAL, type Job } from "./types";

/** How often the queue re-reads the job list while a job is not final. */
export const POLL_MS = 10_000;

/** True while some job may still change (pending or processing): only then is polling useful. */
export function needsPolling(jobs: readonly Job[]): boolean {
  return jobs.some((j) => !FINAL.has(j.status));
}

/**
 * The job list after a re-read: the server's rows in its order, except that
 * - a job the stream (or this page) changed while the request was in flight (``recent``) keeps its
 *   current state, and stays listed even if the re-read did not have it yet (a job created meanwhile);
 * - a running job's progress never goes backwards (progress events can run ahead of the database).
 */
export function mergeJobs(current: readonly Job[], fetched: readonly Job[], recent: ReadonlySet<string>): Job[] {
  const byId = new Map(current.map((j) => [j.id, j]));
  const fetchedIds = new Set(fetched.map((j) => j.id));
  const merged = fetched.map((f) => {
    const c = byId.get(f.id);
    if (!c) return f;
    if (recent.has(f.id)) return c;
    if (c.status === f.status && !FINAL.has(f.status) && c.progress > f.progress) {
      return { ...f, progress: c.progress, speed: c.speed ?? f.speed, eta: c.eta ?? f.eta };
    }
    return f;
  });
  const added = current.filter((j) => recent.has(j.id) && !fetchedIds.has(j.id));
  return [...added, ...merged];
}
