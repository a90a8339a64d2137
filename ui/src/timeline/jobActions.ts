// What a row of the job queue offers, and the list after a job is deleted.
import { FINAL, type Job } from "../lib/types";

export interface JobActions {
  cancel: boolean;
  retry: boolean;
  remove: boolean;
}

/** Cancel while a job may still run, retry after a failure or a cancel, delete once it is final. */
export function jobActions(status: string): JobActions {
  return {
    cancel: status === "pending" || status === "processing",
    retry: status === "failed" || status === "cancelled",
    remove: FINAL.has(status),
  };
}

/** The delete confirmation's question: it names what goes, and whether the output file goes too. */
export function deletePrompt(name: string, withOutput: boolean): string {
  return withOutput ? `Delete this job of ${name} and its output file?` : `Delete this job of ${name}? Its output file is kept.`;
}

/** ``jobs`` without the job ``id`` (after deleteJob). */
export function withoutJob(jobs: readonly Job[], id: string): Job[] {
  return jobs.filter((j) => j.id !== id);
}
