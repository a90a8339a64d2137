import { describe, expect, it } from "vitest";
import { mergeJobs, needsPolling } from "./jobs";
import type { Job } from "./types";

function job(id: string, fields: Partial<Job> = {}): Job {
  return {
    id,
    status: "pending",
    progress: 0,
    speed: null,
    eta: null,
    error: null,
    trimStart: null,
    trimEnd: null,
    chunked: false,
    createdAt: null,
    sourceAsset: null,
    preset: null,
    output: null,
    ...fields,
  };
}

describe("needsPolling", () => {
  it("is true while some job is pending or processing", () => {
    expect(needsPolling([job("a", { status: "completed" }), job("b", { status: "pending" })])).toBe(true);
    expect(needsPolling([job("a", { status: "processing" })])).toBe(true);
  });

  it("is false when every job is final, or there are none", () => {
    expect(needsPolling([])).toBe(false);
    const final = ["completed", "failed", "cancelled"].map((status, i) => job(String(i), { status }));
    expect(needsPolling(final)).toBe(false);
  });
});

describe("mergeJobs", () => {
  it("takes the server's rows and order: a job finished elsewhere shows as finished", () => {
    const current = [job("b", { status: "pending" }), job("a", { status: "processing", progress: 10 })];
    const fetched = [
      job("c", { status: "pending" }),
      job("b", { status: "completed", progress: 100, output: { path: "o.mp4", size: 5, url: "/media/out/o.mp4" } }),
      job("a", { status: "failed", error: "boom" }),
    ];
    const merged = mergeJobs(current, fetched, new Set());
    expect(merged.map((j) => [j.id, j.status])).toEqual([
      ["c", "pending"],
      ["b", "completed"],
      ["a", "failed"],
    ]);
    expect(merged[1].output?.url).toBe("/media/out/o.mp4");
    expect(merged[2].error).toBe("boom");
  });

  it("keeps the current state of a job the stream changed while the request was in flight", () => {
    const current = [job("a", { status: "completed", progress: 100 })];
    const stale = [job("a", { status: "processing", progress: 40 })];
    expect(mergeJobs(current, stale, new Set(["a"]))[0]).toMatchObject({ status: "completed", progress: 100 });
  });

  it("keeps a job created meanwhile that the re-read did not include yet", () => {
    const current = [job("new"), job("a")];
    const merged = mergeJobs(current, [job("a")], new Set(["new"]));
    expect(merged.map((j) => j.id)).toEqual(["new", "a"]);
  });

  it("drops jobs the server no longer lists when nothing changed them", () => {
    expect(mergeJobs([job("gone"), job("a")], [job("a")], new Set()).map((j) => j.id)).toEqual(["a"]);
  });

  it("never moves a running job's progress backwards", () => {
    const current = [job("a", { status: "processing", progress: 62, speed: 2.5, eta: 3 })];
    const lagging = [job("a", { status: "processing", progress: 50, speed: 1, eta: 9 })];
    expect(mergeJobs(current, lagging, new Set())[0]).toMatchObject({ progress: 62, speed: 2.5, eta: 3 });
    const ahead = [job("a", { status: "processing", progress: 70, speed: 3, eta: 2 })];
    expect(mergeJobs(current, ahead, new Set())[0]).toMatchObject({ progress: 70, speed: 3, eta: 2 });
  });

  it("takes a reset progress when the status changed (a retried job starts again)", () => {
    const current = [job("a", { status: "failed", progress: 80 })];
    expect(mergeJobs(current, [job("a", { status: "pending", progress: 0 })], new Set())[0]).toMatchObject({
      status: "pending",
      progress: 0,
    });
  });
});
