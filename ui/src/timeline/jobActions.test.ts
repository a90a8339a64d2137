import { describe, expect, it } from "vitest";
import type { Job } from "../lib/types";
import { deletePrompt, jobActions, withoutJob } from "./jobActions";

describe("jobActions", () => {
  it("offers delete only on final jobs, never together with cancel", () => {
    expect(jobActions("pending")).toEqual({ cancel: true, retry: false, remove: false });
    expect(jobActions("processing")).toEqual({ cancel: true, retry: false, remove: false });
    expect(jobActions("completed")).toEqual({ cancel: false, retry: false, remove: true });
    expect(jobActions("failed")).toEqual({ cancel: false, retry: true, remove: true });
    expect(jobActions("cancelled")).toEqual({ cancel: false, retry: true, remove: true });
    expect(jobActions("unknown")).toEqual({ cancel: false, retry: false, remove: false });
  });
});

describe("deletePrompt", () => {
  it("says whether the output file goes too", () => {
    expect(deletePrompt("a.mp4", true)).toBe("Delete this job of a.mp4 and its output file?");
    expect(deletePrompt("a.mp4", false)).toBe("Delete this job of a.mp4? Its output file is kept.");
  });
});

describe("withoutJob", () => {
  it("drops only the deleted job and keeps the order", () => {
    const jobs = ["a", "b", "c"].map((id) => ({ id, status: "completed" }) as Job);
    expect(withoutJob(jobs, "b").map((j) => j.id)).toEqual(["a", "c"]);
    expect(withoutJob(jobs, "zzz")).toEqual(jobs);
  });
});
