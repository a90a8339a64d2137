import { describe, expect, it } from "vitest";
import { PipelineEvent } from "../gen/mpr/v1/events";
import { applyEvent, emptyPipeline, withPlan, type PipelineState } from "./pipeline";

const T0 = 1_750_000_000;

/** An event as the server sends it: job-level events have chunk_index -1. */
function ev(type: string, fields: Partial<PipelineEvent> = {}): PipelineEvent {
  return PipelineEvent.create({ jobId: "job-1", type, status: "processing", chunkIndex: -1, ...fields });
}

/** Number the events 1, 2, 3, ... (like StreamChunkPipeline) with timestamps T0 + i unless given. */
function numbered(events: PipelineEvent[]): [PipelineEvent, number][] {
  return events.map((e, i) => [{ ...e, sequence: String(i + 1), timestamp: e.timestamp || T0 + i }, i + 1]);
}

function fold(events: [PipelineEvent, number][], start: PipelineState = emptyPipeline()): PipelineState {
  return events.reduce((s, [e, seq]) => applyEvent(s, e, seq), start);
}

/** A two-worker, three-chunk job from start to completion, in the order the server emits it. */
function happyJob(): PipelineEvent[] {
  return [
    ev("status", { status: "processing", message: "started" }),
    ev("chunk_queued", { chunkIndex: 0, message: "0.000-2.000s" }),
    ev("chunk_queued", { chunkIndex: 1, message: "2.000-4.000s" }),
    ev("chunk_queued", { chunkIndex: 2, message: "4.000-5.000s" }),
    ev("chunk_started", { chunkIndex: 0, workerId: "w1", message: "attempt 1" }),
    ev("chunk_started", { chunkIndex: 1, workerId: "w2", message: "attempt 1" }),
    ev("chunk_progress", { chunkIndex: 0, workerId: "w1", progress: 40, fps: 120, speed: 4.8 }),
    ev("progress", { progress: 20, fps: 230, speed: 4.6, eta: 3 }),
    ev("chunk_done", { chunkIndex: 0, workerId: "w1", progress: 100 }),
    ev("chunk_started", { chunkIndex: 2, workerId: "w1", message: "attempt 1" }),
    ev("chunk_progress", { chunkIndex: 1, workerId: "w2", progress: 80, fps: 110, speed: 4.4 }),
    ev("progress", { progress: 70, fps: 210, speed: 4.2, eta: 1 }),
    ev("chunk_done", { chunkIndex: 1, workerId: "w2", progress: 100 }),
    ev("chunk_done", { chunkIndex: 2, workerId: "w1", progress: 100 }),
    ev("progress", { progress: 97, fps: 0, speed: 4.0, eta: 0.2 }),
    ev("status", { status: "completed", progress: 100 }),
  ];
}

describe("emptyPipeline", () => {
  it("is a pending job with nothing seen", () => {
    const s = emptyPipeline();
    expect(s.status).toBe("pending");
    expect(s.progress).toBe(0);
    expect(s.chunks.size).toBe(0);
    expect(s.workers).toEqual([]);
    expect(s.sequences).toEqual([]);
    expect(s.firstTs).toBeNull();
    expect(emptyPipeline()).not.toBe(s); // a fresh object each time (React state)
  });
});

describe("applyEvent: a whole job", () => {
  const events = numbered(happyJob());
  const s = fold(events);

  it("ends completed at 100% with every chunk done", () => {
    expect(s.status).toBe("completed");
    expect(s.progress).toBe(100);
    expect([...s.chunks.values()].map((c) => [c.index, c.state, c.progress])).toEqual([
      [0, "done", 100],
      [1, "done", 100],
      [2, "done", 100],
    ]);
    expect(s.sequences).toEqual(events.map(([, seq]) => seq));
  });

  it("has one lane per worker, in the order they first took a chunk", () => {
    expect(s.workers).toEqual(["w1", "w2"]);
    expect(s.chunks.get(0)!.worker).toBe("w1");
    expect(s.chunks.get(1)!.worker).toBe("w2");
    expect(s.chunks.get(2)!.worker).toBe("w1");
  });

  it("places chunks on the wall clock: started at chunk_started, ended at chunk_done", () => {
    const c0 = s.chunks.get(0)!;
    expect(c0.startedTs).toBe(T0 + 4);
    expect(c0.endedTs).toBe(T0 + 8);
    expect(c0.attempts).toBe(1);
    const c2 = s.chunks.get(2)!;
    expect(c2.startedTs).toBe(T0 + 9);
    expect(c2.endedTs).toBe(T0 + 13);
    expect(s.firstTs).toBe(T0);
    expect(s.lastTs).toBe(T0 + 15);
  });

  it("keeps job and chunk fps/speed samples apart, with the events' real fps", () => {
    expect(s.jobSamples).toEqual([
      { ts: T0 + 7, fps: 230, speed: 4.6 },
      { ts: T0 + 11, fps: 210, speed: 4.2 },
      // no chunk encoding (the concat): the real fps is 0, the speed still counts
      { ts: T0 + 14, fps: 0, speed: 4.0 },
    ]);
    expect(s.chunkSamples).toEqual([
      { ts: T0 + 6, fps: 120, speed: 4.8 },
      { ts: T0 + 10, fps: 110, speed: 4.4 },
    ]);
    // the figure shown is the last measured fps, not a 0 from the concat
    expect(s.fps).toBe(210);
    expect(s.speed).toBe(4.0);
  });

  it("logs every event once, in order, with its details", () => {
    expect(s.log.map((l) => l.seq)).toEqual(events.map(([, seq]) => seq));
    expect(s.log[1]).toMatchObject({ type: "chunk_queued", chunk: 0, message: "0.000-2.000s", ts: T0 + 1 });
    expect(s.log.at(-1)).toMatchObject({ type: "status", status: "completed", chunk: -1 });
  });

  it("tracks overall progress and ETA from job-level events only", () => {
    const upTo = (n: number) => fold(events.slice(0, n));
    expect(upTo(7).progress).toBe(0); // a chunk at 40% is not the job at 40%
    expect(upTo(8).progress).toBe(20);
    expect(upTo(8).eta).toBe(3);
    expect(upTo(12).progress).toBe(70);
    expect(upTo(15).progress).toBe(97);
  });

  it("shows a running chunk's own progress", () => {
    const mid = fold(events.slice(0, 7));
    expect(mid.chunks.get(0)).toMatchObject({ state: "running", progress: 40 });
    expect(mid.chunks.get(1)).toMatchObject({ state: "running", progress: 0 });
    expect(mid.chunks.get(2)).toMatchObject({ state: "queued", worker: "" });
  });
});

describe("applyEvent: purity, duplicates and reconnects", () => {
  it("never changes the state it is given", () => {
    const events = numbered(happyJob());
    const before = fold(events.slice(0, 8));
    const snapshot = structuredClone(before);
    applyEvent(before, events[8][0], events[8][1]);
    expect(before).toEqual(snapshot);
  });

  it("ignores an event whose sequence was already applied (a replay)", () => {
    const events = numbered(happyJob());
    const s = fold(events.slice(0, 9)); // chunk 0 done at #9
    // #5 (chunk 0 started) again: must not make chunk 0 running, log it twice or count an attempt
    expect(applyEvent(s, events[4][0], 5)).toBe(s);
    expect(applyEvent(s, events[8][0], 9)).toBe(s);
    expect(s.chunks.get(0)).toMatchObject({ state: "done", attempts: 1 });
  });

  it("ignores an event older than the last one (out of order)", () => {
    const s = fold(numbered(happyJob()).slice(0, 6));
    const late = applyEvent(s, ev("chunk_failed", { chunkIndex: 0, workerId: "w1" }), 3);
    expect(late).toBe(s);
    expect(s.chunks.get(0)!.state).toBe("running");
  });

  it("gives the same picture after a reconnect that resumes after the last sequence", () => {
    const events = numbered(happyJob());
    const straight = fold(events);
    // first connection: #1..#9, then the stream drops; the second resumes after #9. A server
    // that replays a few (at or below after_sequence) must not change anything either.
    const first = fold(events.slice(0, 9));
    const resumed = fold([...events.slice(6, 9), ...events.slice(9)], first);
    expect(resumed).toEqual(straight);
  });

  it("accepts gaps in the numbering (it only needs sequences to grow)", () => {
    const s = fold([
      [ev("chunk_started", { chunkIndex: 0, workerId: "w1", timestamp: T0 }), 1],
      [ev("chunk_done", { chunkIndex: 0, workerId: "w1", timestamp: T0 + 1 }), 5],
    ]);
    expect(s.chunks.get(0)!.state).toBe("done");
    expect(s.sequences).toEqual([1, 5]);
  });
});

describe("applyEvent: a chunk that fails and is retried", () => {
  const events = numbered([
    ev("chunk_queued", { chunkIndex: 3 }),
    ev("chunk_started", { chunkIndex: 3, workerId: "w1", message: "attempt 1" }),
    ev("chunk_progress", { chunkIndex: 3, workerId: "w1", progress: 55, fps: 90, speed: 3 }),
    ev("chunk_failed", { chunkIndex: 3, workerId: "w1", message: "attempt 1/3: exit 1 (retrying)" }),
    ev("chunk_started", { chunkIndex: 3, workerId: "w2", message: "attempt 2" }),
    ev("chunk_progress", { chunkIndex: 3, workerId: "w2", progress: 30, fps: 80, speed: 2.5 }),
    ev("chunk_done", { chunkIndex: 3, workerId: "w2", progress: 100 }),
  ]);

  it("goes failed, then running again from 0%, then done", () => {
    const states = events.map((_, i) => fold(events.slice(0, i + 1)).chunks.get(3)!);
    expect(states.map((c) => c.state)).toEqual(["queued", "running", "running", "failed", "running", "running", "done"]);
    expect(states[3].endedTs).toBe(T0 + 3);
    expect(states[4]).toMatchObject({ progress: 0, endedTs: null, startedTs: T0 + 4, worker: "w2", attempts: 2 });
    expect(states[6]).toMatchObject({ progress: 100, endedTs: T0 + 6, attempts: 2 });
  });

  it("leaves the job processing (a retried chunk is not a failed job)", () => {
    expect(fold(events.slice(0, 4)).status).toBe("processing");
  });

  it("keeps both workers' lanes", () => {
    expect(fold(events).workers).toEqual(["w1", "w2"]);
  });
});

describe("applyEvent: a progress report that arrives after the chunk finished", () => {
  // The server's monitor samples running chunks, then emits chunk_progress outside its lock;
  // the chunk's worker can emit chunk_done (or chunk_failed) in between.
  it("does not move a done chunk back to running", () => {
    const s = fold(
      numbered([
        ev("chunk_started", { chunkIndex: 0, workerId: "w1" }),
        ev("chunk_done", { chunkIndex: 0, workerId: "w1", progress: 100 }),
        ev("chunk_progress", { chunkIndex: 0, workerId: "w1", progress: 96, fps: 100, speed: 4 }),
        ev("status", { status: "completed", progress: 100 }),
      ]),
    );
    expect(s.chunks.get(0)).toMatchObject({ state: "done", progress: 100, endedTs: T0 + 1 });
  });

  it("does not move a failed chunk back to running, and a later attempt still starts it", () => {
    const events = numbered([
      ev("chunk_started", { chunkIndex: 0, workerId: "w1" }),
      ev("chunk_failed", { chunkIndex: 0, workerId: "w1" }),
      ev("chunk_progress", { chunkIndex: 0, workerId: "w1", progress: 50 }),
      ev("chunk_started", { chunkIndex: 0, workerId: "w2" }),
      ev("chunk_progress", { chunkIndex: 0, workerId: "w2", progress: 10 }),
    ]);
    expect(fold(events.slice(0, 3)).chunks.get(0)).toMatchObject({ state: "failed", progress: 0 });
    expect(fold(events).chunks.get(0)).toMatchObject({ state: "running", progress: 10, worker: "w2", attempts: 2 });
  });

  it("shows a chunk running from its first progress report if chunk_started was not seen", () => {
    const s = fold(numbered([ev("chunk_progress", { chunkIndex: 4, workerId: "w1", progress: 12 })]));
    expect(s.chunks.get(4)).toMatchObject({ state: "running", progress: 12, startedTs: T0, attempts: 0 });
  });
});

describe("applyEvent: final job states", () => {
  const running = numbered([
    ev("chunk_queued", { chunkIndex: 0 }),
    ev("chunk_queued", { chunkIndex: 1 }),
    ev("chunk_queued", { chunkIndex: 2 }),
    ev("chunk_queued", { chunkIndex: 3 }),
    ev("chunk_started", { chunkIndex: 0, workerId: "w1" }),
    ev("chunk_done", { chunkIndex: 0, workerId: "w1" }),
    ev("chunk_started", { chunkIndex: 1, workerId: "w1" }),
    ev("chunk_started", { chunkIndex: 2, workerId: "w2" }),
    ev("chunk_failed", { chunkIndex: 2, workerId: "w2", message: "attempt 3/3: exit 1" }),
  ]);

  for (const status of ["failed", "cancelled"]) {
    it(`${status}: chunks that never finished stop as cancelled; done and failed ones stay`, () => {
      const s = fold([...running, [ev("status", { status, message: "chunk 2 failed", timestamp: T0 + 20 }), 10]]);
      expect(s.status).toBe(status);
      expect([...s.chunks.values()].map((c) => c.state)).toEqual(["done", "cancelled", "failed", "cancelled"]);
      expect(s.chunks.get(1)!.endedTs).toBe(T0 + 20); // the running one stops at the final event
      expect(s.chunks.get(0)!.endedTs).toBe(T0 + 5);
      expect(s.chunks.get(2)!.endedTs).toBe(T0 + 8);
    });
  }

  it("failed keeps the progress the job had reached", () => {
    const s = fold([
      [ev("progress", { progress: 42, speed: 2, timestamp: T0 }), 1],
      [ev("status", { status: "failed", timestamp: T0 + 1 }), 2],
    ]);
    expect(s.progress).toBe(42);
  });

  it("completed is 100% even without a progress figure in the event", () => {
    const s = fold([
      [ev("progress", { progress: 90, speed: 2, timestamp: T0 }), 1],
      [ev("status", { status: "completed", timestamp: T0 + 1 }), 2],
    ]);
    expect(s.progress).toBe(100);
    expect(s.status).toBe("completed");
  });

  it("a status event without a progress figure keeps the progress", () => {
    const s = fold([
      [ev("progress", { progress: 35, speed: 1, timestamp: T0 }), 1],
      [ev("status", { status: "processing", timestamp: T0 + 1 }), 2],
    ]);
    expect(s.progress).toBe(35);
  });
});

describe("applyEvent: samples, log and timestamps", () => {
  it("records no sample for events without fps or speed", () => {
    const s = fold(
      numbered([
        ev("progress", { progress: 5 }),
        ev("chunk_progress", { chunkIndex: 0, workerId: "w1", progress: 5 }),
        ev("status", { status: "processing", fps: 50, speed: 2 }),
      ]),
    );
    expect(s.jobSamples).toEqual([]);
    expect(s.chunkSamples).toEqual([]);
    // a status event's figures are shown but are not a sample
    expect(s.fps).toBe(50);
    expect(s.speed).toBe(2);
  });

  it("keeps the newest 400 samples and 500 log lines", () => {
    const events = numbered(Array.from({ length: 650 }, (_, i) => ev("progress", { progress: i / 10, fps: i + 1, speed: 1 })));
    const s = fold(events);
    expect(s.jobSamples).toHaveLength(400);
    expect(s.jobSamples[0].fps).toBe(251);
    expect(s.jobSamples.at(-1)!.fps).toBe(650);
    expect(s.log).toHaveLength(500);
    expect(s.log[0].seq).toBe(151);
    expect(s.log.at(-1)!.seq).toBe(650);
    expect(s.sequences).toHaveLength(650);
  });

  it("spans the wall clock from the earliest to the latest timestamp, in whatever order they come", () => {
    // events are stamped by the thread that made them, so two can be numbered in the other order
    const s = fold([
      [ev("chunk_started", { chunkIndex: 0, workerId: "w1", timestamp: T0 + 10 }), 1],
      [ev("chunk_started", { chunkIndex: 1, workerId: "w2", timestamp: T0 + 9.5 }), 2],
      [ev("chunk_done", { chunkIndex: 0, workerId: "w1", timestamp: T0 + 12 }), 3],
      [ev("chunk_progress", { chunkIndex: 1, workerId: "w2", progress: 50, timestamp: T0 + 11 }), 4],
    ]);
    expect(s.firstTs).toBe(T0 + 9.5);
    expect(s.lastTs).toBe(T0 + 12);
    for (const c of s.chunks.values()) expect(c.startedTs!).toBeGreaterThanOrEqual(s.firstTs!);
  });

  it("stamps an event without a timestamp with the time it arrived", () => {
    const before = Date.now() / 1000;
    const s = applyEvent(emptyPipeline(), ev("status", { status: "processing", timestamp: 0 }), 1);
    expect(s.firstTs!).toBeGreaterThanOrEqual(before);
    expect(s.firstTs!).toBeLessThanOrEqual(Date.now() / 1000);
  });

  it("does not open a lane for a job-level event that names a worker, nor for a 'log' event", () => {
    const s = fold(numbered([ev("status", { workerId: "host-1" }), ev("log", { message: "concat", workerId: "w9" })]));
    expect(s.workers).toEqual([]);
    expect(s.chunks.size).toBe(0);
    expect(s.log.map((l) => l.type)).toEqual(["status", "log"]);
  });
});

describe("withPlan", () => {
  const plan = [
    { index: 0, start: 0, end: 2, status: "done", worker: "w1" },
    { index: 1, start: 2, end: 4, status: "running", worker: "w2" },
    { index: 2, start: 4, end: 5, status: "queued", worker: null },
  ];

  it("adds planned chunks with their time ranges and database state", () => {
    const s = withPlan(emptyPipeline(), plan);
    expect([...s.chunks.values()]).toEqual([
      expect.objectContaining({ index: 0, start: 0, end: 2, state: "done", worker: "w1", progress: 100 }),
      expect.objectContaining({ index: 1, start: 2, end: 4, state: "running", worker: "w2", progress: 0 }),
      expect.objectContaining({ index: 2, start: 4, end: 5, state: "queued", worker: "", progress: 0 }),
    ]);
  });

  it("gives live chunks their time ranges without touching their live state", () => {
    const live = fold(
      numbered([
        ev("chunk_started", { chunkIndex: 1, workerId: "w2" }),
        ev("chunk_progress", { chunkIndex: 1, workerId: "w2", progress: 60 }),
      ]),
    );
    const s = withPlan(live, plan);
    expect(s.chunks.get(1)).toEqual({ ...live.chunks.get(1)!, start: 2, end: 4 });
    expect(live.chunks.get(1)!.start).toBeNull(); // the old state is untouched
    // later events keep the range
    const after = applyEvent(s, ev("chunk_done", { chunkIndex: 1, workerId: "w2", timestamp: T0 + 5 }), 3);
    expect(after.chunks.get(1)).toMatchObject({ state: "done", start: 2, end: 4 });
  });

  it("changes nothing but the chunks (status, log and samples stay)", () => {
    const live = fold(numbered(happyJob()).slice(0, 8));
    const s = withPlan(live, plan);
    expect({ ...s, chunks: null }).toEqual({ ...live, chunks: null });
  });
});
