// The chunk pipeline's state, rebuilt from its event stream (a pure reducer, so a resumed
// stream that replays nothing and skips nothing gives exactly the same picture).
import type { PipelineEvent } from "../lib/stream";
import { FINAL } from "../lib/types";

export interface ChunkState {
  index: number;
  start: number | null;
  end: number | null;
  state: string; // queued | running | done | failed | cancelled
  worker: string;
  progress: number;
  startedTs: number | null;
  endedTs: number | null;
  attempts: number;
}

export interface Sample {
  ts: number;
  fps: number;
  speed: number;
}

export interface LogLine {
  seq: number;
  ts: number;
  type: string;
  chunk: number;
  worker: string;
  progress: number;
  message: string;
  status: string;
}

export interface PipelineState {
  status: string;
  progress: number;
  fps: number;
  speed: number;
  eta: number;
  chunks: Map<number, ChunkState>;
  workers: string[];
  firstTs: number | null;
  lastTs: number | null;
  jobSamples: Sample[];
  chunkSamples: Sample[];
  log: LogLine[];
  sequences: number[];
}

export function emptyPipeline(): PipelineState {
  return {
    status: "pending",
    progress: 0,
    fps: 0,
    speed: 0,
    eta: 0,
    chunks: new Map(),
    workers: [],
    firstTs: null,
    lastTs: null,
    jobSamples: [],
    chunkSamples: [],
    log: [],
    sequences: [],
  };
}

const MAX_SAMPLES = 400;
const FINISHED: ReadonlySet<string> = new Set(["done", "failed", "cancelled"]);
const MAX_LOG = 500;

function chunkOf(state: PipelineState, index: number): ChunkState {
  return (
    state.chunks.get(index) ?? {
      index,
      start: null,
      end: null,
      state: "queued",
      worker: "",
      progress: 0,
      startedTs: null,
      endedTs: null,
      attempts: 0,
    }
  );
}

/** Apply one event; returns a new state object (chunks map copied on write). */
export function applyEvent(prev: PipelineState, ev: PipelineEvent, seq: number): PipelineState {
  // Sequence numbers only grow: one at or below the last applied is a replay, and applying it
  // again would log it twice and could move a chunk back to an older state.
  const last = prev.sequences.length ? prev.sequences[prev.sequences.length - 1] : 0;
  if (seq <= last) return prev;
  const s: PipelineState = { ...prev };
  const ts = ev.timestamp || Date.now() / 1000;
  // Events are stamped by the thread that made them, so timestamps may be slightly out of order.
  s.firstTs = Math.min(s.firstTs ?? ts, ts);
  s.lastTs = Math.max(s.lastTs ?? ts, ts);
  if (ev.status) s.status = ev.status;
  s.sequences = [...prev.sequences, seq];
  s.log = [
    ...prev.log.slice(-(MAX_LOG - 1)),
    {
      seq,
      ts,
      type: ev.type,
      chunk: ev.chunkIndex,
      worker: ev.workerId,
      progress: ev.progress,
      message: ev.message,
      status: ev.status,
    },
  ];
  if (ev.workerId && ev.chunkIndex >= 0 && !prev.workers.includes(ev.workerId)) {
    s.workers = [...prev.workers, ev.workerId];
  }
  if (ev.type === "progress" || (ev.type === "status" && ev.chunkIndex < 0)) {
    if (ev.type === "progress" || ev.progress > 0) s.progress = ev.progress;
    if (ev.fps) s.fps = ev.fps;
    if (ev.speed) s.speed = ev.speed;
    s.eta = ev.eta;
    if (ev.type === "progress" && (ev.fps || ev.speed)) {
      s.jobSamples = [...prev.jobSamples.slice(-(MAX_SAMPLES - 1)), { ts, fps: ev.fps, speed: ev.speed }];
    }
  }
  if (ev.type === "status" && ev.status === "completed") s.progress = 100;
  if (ev.chunkIndex >= 0 && ev.type.startsWith("chunk_")) {
    const c = { ...chunkOf(prev, ev.chunkIndex) };
    if (ev.workerId) c.worker = ev.workerId;
    switch (ev.type) {
      case "chunk_queued":
        c.state = "queued";
        break;
      case "chunk_started":
        c.state = "running";
        c.startedTs = ts;
        c.endedTs = null;
        c.progress = 0;
        c.attempts += 1;
        break;
      case "chunk_progress":
        // A progress report sampled just before the chunk finished can arrive after its
        // chunk_done/chunk_failed: it must not move a finished chunk back to running.
        if (FINISHED.has(c.state)) break;
        c.state = "running";
        c.startedTs = c.startedTs ?? ts;
        c.progress = ev.progress;
        if (ev.fps || ev.speed) {
          s.chunkSamples = [...prev.chunkSamples.slice(-(MAX_SAMPLES - 1)), { ts, fps: ev.fps, speed: ev.speed }];
        }
        break;
      case "chunk_done":
        c.state = "done";
        c.progress = 100;
        c.endedTs = ts;
        c.startedTs = c.startedTs ?? ts;
        break;
      case "chunk_failed":
        c.state = "failed";
        c.endedTs = ts;
        break;
    }
    s.chunks = new Map(prev.chunks);
    s.chunks.set(c.index, c);
  }
  if (ev.type === "status" && FINAL.has(ev.status) && ev.status !== "completed") {
    // Chunks that never finished stop where they are.
    s.chunks = new Map(s.chunks);
    for (const [i, c] of s.chunks) {
      if (c.state === "queued" || c.state === "running") s.chunks.set(i, { ...c, state: "cancelled", endedTs: c.endedTs ?? ts });
    }
  }
  return s;
}

/** Chunk time ranges from the job's planned chunks (GraphQL), merged without touching live state. */
export function withPlan(prev: PipelineState, plan: { index: number; start: number; end: number; status: string; worker: string | null }[]): PipelineState {
  const chunks = new Map(prev.chunks);
  for (const p of plan) {
    const c = chunks.get(p.index);
    if (c) chunks.set(p.index, { ...c, start: p.start, end: p.end });
    else
      chunks.set(p.index, {
        index: p.index,
        start: p.start,
        end: p.end,
        state: p.status,
        worker: p.worker ?? "",
        progress: p.status === "done" ? 100 : 0,
        startedTs: null,
        endedTs: null,
        attempts: 0,
      });
  }
  return { ...prev, chunks };
}
