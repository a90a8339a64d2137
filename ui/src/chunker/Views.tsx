import { useMemo } from "react";
import { clockTime, timecode } from "../lib/format";
import type { ChunkState, LogLine, PipelineState, Sample } from "./pipeline";

function chunkTitle(c: ChunkState): string {
  const span = c.start != null && c.end != null ? `${timecode(c.start)}–${timecode(c.end)}` : "time unknown";
  return `Chunk ${c.index} (${span}): ${c.state}${c.worker ? ` on ${c.worker}` : ""}${
    c.state === "running" ? `, ${c.progress.toFixed(0)}%` : ""
  }`;
}

/** All chunks in media order, each block as wide as its share of the media's duration. */
export function ChunkMap({ state }: { state: PipelineState }) {
  const chunks = [...state.chunks.values()].sort((a, b) => a.index - b.index);
  if (chunks.length === 0) return <p className="muted">No chunks planned yet.</p>;
  return (
    <div className="chunkmap" role="list" aria-label="Chunks in media order">
      {chunks.map((c) => {
        const len = c.start != null && c.end != null ? Math.max(0.05, c.end - c.start) : 1;
        return (
          <div
            key={c.index}
            role="listitem"
            className={`chunk chunk-${c.state}`}
            data-chunk={c.index}
            data-state={c.state}
            style={{ flexGrow: len }}
            title={chunkTitle(c)}
            aria-label={chunkTitle(c)}
          >
            {c.state === "running" && <span className="chunk-fill" style={{ width: `${c.progress}%` }} />}
            <span className="chunk-label">{c.index}</span>
          </div>
        );
      })}
    </div>
  );
}

/** One lane per worker thread; blocks placed and sized by wall-clock time. */
export function WorkerLanes({ state, expectedWorkers }: { state: PipelineState; expectedWorkers: number }) {
  const t0 = state.firstTs ?? 0;
  const span = Math.max(1, (state.lastTs ?? t0) - t0);
  const lanes = [...state.workers];
  for (let i = lanes.length; i < expectedWorkers; i++) lanes.push("");
  const byWorker = new Map<string, ChunkState[]>();
  for (const c of state.chunks.values()) {
    if (!c.worker || c.startedTs == null) continue;
    byWorker.set(c.worker, [...(byWorker.get(c.worker) ?? []), c]);
  }
  if (lanes.length === 0) return <p className="muted">Workers appear here when they pick up chunks.</p>;
  return (
    <div className="lanes" aria-label="Worker lanes">
      {lanes.map((w, i) => (
        <div className="lane" key={w || `idle-${i}`} data-worker={w}>
          <div className="lane-label">{w || `worker ${i + 1} (idle)`}</div>
          <div className="lane-track">
            {(byWorker.get(w) ?? []).map((c) => {
              const left = (((c.startedTs ?? t0) - t0) / span) * 100;
              const right = ((((c.endedTs ?? state.lastTs) ?? t0) - t0) / span) * 100;
              return (
                <div
                  key={c.index}
                  className={`block chunk-${c.state}`}
                  data-chunk={c.index}
                  data-state={c.state}
                  style={{ left: `${left}%`, width: `max(${Math.max(0, right - left)}%, 4px)` }}
                  title={chunkTitle(c)}
                >
                  <span>{c.index}</span>
                </div>
              );
            })}
          </div>
        </div>
      ))}
    </div>
  );
}

function polyline(samples: Sample[], key: "fps" | "speed", w: number, h: number): string {
  if (samples.length === 0) return "";
  if (samples.length === 1) samples = [samples[0], { ...samples[0], ts: samples[0].ts + 1 }];
  const t0 = samples[0].ts;
  const t1 = samples[samples.length - 1].ts;
  const max = Math.max(...samples.map((s) => s[key]), 0.001);
  return samples
    .map((s) => `${(((s.ts - t0) / Math.max(0.001, t1 - t0)) * w).toFixed(1)},${(h - (s[key] / max) * (h - 2) - 1).toFixed(1)}`)
    .join(" ");
}

/** fps and speed over time (job-level samples, else per-chunk ones). */
export function Sparkline({ state, sourceFps }: { state: PipelineState; sourceFps: number }) {
  const raw = state.jobSamples.length ? state.jobSamples : state.chunkSamples;
  // Without an fps figure in the events, frames per second = speed × the source's frame rate.
  const samples = useMemo(
    () => raw.map((s) => (s.fps || !sourceFps ? s : { ...s, fps: s.speed * sourceFps })),
    [raw, sourceFps],
  );
  const w = 300;
  const h = 48;
  const last = samples[samples.length - 1];
  const fpsLine = useMemo(() => polyline(samples, "fps", w, h), [samples]);
  const speedLine = useMemo(() => polyline(samples, "speed", w, h), [samples]);
  return (
    <figure className="spark" aria-label="Throughput over time">
      <div>
        <span className="spark-label legend-fps">fps {last ? last.fps.toFixed(0) : "–"}</span>
        <svg viewBox={`0 0 ${w} ${h}`} preserveAspectRatio="none" role="img" aria-label="Frames per second over time">
          <polyline points={fpsLine} className="spark-fps" fill="none" />
        </svg>
      </div>
      <div>
        <span className="spark-label legend-speed">speed {last ? `${last.speed.toFixed(2)}×` : "–"}</span>
        <svg viewBox={`0 0 ${w} ${h}`} preserveAspectRatio="none" role="img" aria-label="Encoding speed over time">
          <polyline points={speedLine} className="spark-speed" fill="none" />
        </svg>
      </div>
    </figure>
  );
}

export function EventLog({ log }: { log: LogLine[] }) {
  const lines = log.slice(-200).reverse();
  return (
    <div className="eventlog" tabIndex={0} aria-label="Event log (newest first)">
      {lines.length === 0 ? (
        <p className="muted">Waiting for events…</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">time</th>
              <th scope="col">event</th>
              <th scope="col">chunk</th>
              <th scope="col">worker</th>
              <th scope="col">detail</th>
            </tr>
          </thead>
          <tbody>
            {lines.map((l) => (
              <tr key={l.seq} data-seq={l.seq} className={`ev ev-${l.type}`}>
                <td>{l.seq}</td>
                <td>{clockTime(l.ts)}</td>
                <td>{l.type}</td>
                <td>{l.chunk >= 0 ? l.chunk : ""}</td>
                <td>{l.worker}</td>
                <td>
                  {l.type === "status" ? l.status : l.type.endsWith("progress") ? `${l.progress.toFixed(1)}%` : ""}
                  {l.message ? ` ${l.message}` : ""}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
