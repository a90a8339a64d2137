import { useCallback, useEffect, useId, useRef, useState } from "react";
import {
  AuthPrompt,
  Empty,
  ErrorBanner,
  Header,
  LiveIndicator,
  ProgressBar,
  StatusBadge,
  useAuthNeeded,
  useTokenVersion,
} from "../components/common";
import { createJob, defaultPreset, getJob, listAssets, listJobs, listPresets } from "../lib/api";
import { errorMessage, isAuthError } from "../lib/graphql";
import { showingText } from "../lib/paging";
import { bytes, eta, speed } from "../lib/format";
import { eventsClient, followStream, type StreamStats } from "../lib/stream";
import { FINAL, type Asset, type Job, type Preset } from "../lib/types";
import { applyEvent, emptyPipeline, withPlan, type PipelineState } from "./pipeline";
import { ChunkMap, EventLog, Sparkline, WorkerLanes } from "./Views";

/** How many assets the chunker's picker lists at most (its search box finds the others). */
const PICKER_LIMIT = 200;

function jobFromUrl(): string | null {
  return new URLSearchParams(location.search).get("job");
}

function openJob(id: string | null) {
  const url = new URL(location.href);
  if (id) url.searchParams.set("job", id);
  else url.searchParams.delete("job");
  history.pushState(null, "", url);
  window.dispatchEvent(new PopStateEvent("popstate"));
}

/** An error to show: a message, or what a request threw (a refused read shows the token prompt instead). */
type OnError = (err: unknown) => void;

function StartForm({ onError }: { onError: OnError }) {
  const [assets, setAssets] = useState<Asset[]>([]);
  const [presets, setPresets] = useState<Preset[]>([]);
  const [recent, setRecent] = useState<Job[]>([]);
  const [assetId, setAssetId] = useState("");
  const [presetId, setPresetId] = useState("");
  const [chunkSeconds, setChunkSeconds] = useState(2);
  const [workers, setWorkers] = useState(2);
  const [jobId, setJobId] = useState("");
  const [busy, setBusy] = useState(false);
  const [loaded, setLoaded] = useState(false);
  const [assetSearch, setAssetSearch] = useState("");
  const [assetTotal, setAssetTotal] = useState(0);
  const ids = { asset: useId(), find: useId(), preset: useId(), secs: useId(), workers: useId(), job: useId() };
  const tokenVersion = useTokenVersion();
  const locked = useAuthNeeded();

  useEffect(() => {
    Promise.all([listPresets(), listJobs(50)])
      .then(([p, j]) => {
        setPresets(p);
        setRecent(j.filter((x) => x.chunked).slice(0, 10));
        const preferred = defaultPreset(p.filter((x) => x.videoCodec && x.videoCodec !== "copy"));
        if (preferred) setPresetId(preferred.id);
      })
      .catch(onError);
  }, [onError, tokenVersion]);

  // The picker lists ready videos, filtered and counted by the server (a large library shows the
  // first PICKER_LIMIT; the search box narrows it).
  useEffect(() => {
    let stale = false;
    const timer = setTimeout(
      () => {
        listAssets({ kind: "video", status: "ready", search: assetSearch }, PICKER_LIMIT)
          .then((page) => {
            if (stale) return;
            setAssets(page.assets);
            setAssetTotal(page.total);
            setAssetId((id) => (page.assets.some((a) => a.id === id) ? id : (page.assets[0]?.id ?? "")));
          })
          .catch((err) => !stale && onError(err))
          .finally(() => !stale && setLoaded(true));
      },
      assetSearch ? 300 : 0,
    );
    return () => {
      stale = true;
      clearTimeout(timer);
    };
  }, [assetSearch, onError, tokenVersion]);

  const start = async () => {
    if (!assetId || !presetId) {
      onError("Choose an asset and a preset first.");
      return;
    }
    setBusy(true);
    try {
      const job = await createJob({ sourceAssetId: assetId, presetId, chunked: true, chunkSeconds, chunkWorkers: workers });
      openJob(job.id);
    } catch (err) {
      onError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="chunker-start">
      <section className="panel" aria-labelledby="start-title">
        <h2 id="start-title">Start a chunked job</h2>
        {locked ? (
          <Empty>Enter the API token to see the ready videos.</Empty>
        ) : loaded && assetTotal === 0 && !assetSearch ? (
          <Empty>
            No ready video assets. Scan the media folder in the <a href="/">Timeline UI</a> first.
          </Empty>
        ) : (
          <form
            className="form-grid"
            onSubmit={(e) => {
              e.preventDefault();
              void start();
            }}
          >
            <label htmlFor={ids.find}>Search videos</label>
            <span className="row picker-find">
              <input
                id={ids.find}
                type="search"
                value={assetSearch}
                placeholder="name, path or comment"
                onChange={(e) => setAssetSearch(e.target.value)}
              />
              <span className="muted" data-testid="picker-count">
                {showingText(assets.length, assetTotal, "ready videos")}
              </span>
            </span>
            <label htmlFor={ids.asset}>Asset</label>
            <select id={ids.asset} value={assetId} onChange={(e) => setAssetId(e.target.value)}>
              {assets.length === 0 && <option value="">No ready video matches</option>}
              {assets.map((a) => (
                <option key={a.id} value={a.id}>
                  {a.filename}
                </option>
              ))}
            </select>
            <label htmlFor={ids.preset}>Preset</label>
            <select id={ids.preset} value={presetId} onChange={(e) => setPresetId(e.target.value)}>
              {presets.map((p) => (
                <option key={p.id} value={p.id}>
                  {p.name} ({p.container})
                </option>
              ))}
            </select>
            <label htmlFor={ids.secs}>Chunk length (seconds)</label>
            <input
              id={ids.secs}
              type="number"
              min={0.5}
              step={0.5}
              value={chunkSeconds}
              onChange={(e) => setChunkSeconds(Number(e.target.value))}
            />
            <label htmlFor={ids.workers}>Workers</label>
            <input id={ids.workers} type="number" min={1} max={16} step={1} value={workers} onChange={(e) => setWorkers(Number(e.target.value))} />
            <span />
            <button type="submit" className="primary" disabled={busy}>
              {busy ? "Starting…" : "Start chunked job"}
            </button>
          </form>
        )}
      </section>
      <section className="panel" aria-labelledby="open-title">
        <h2 id="open-title">Watch a job</h2>
        <form
          className="row"
          onSubmit={(e) => {
            e.preventDefault();
            if (jobId.trim()) openJob(jobId.trim());
          }}
        >
          <label htmlFor={ids.job}>Job id</label>
          <input id={ids.job} value={jobId} onChange={(e) => setJobId(e.target.value)} placeholder="uuid" />
          <button type="submit">Open</button>
        </form>
        {recent.length > 0 && !locked && (
          <ul className="recent" aria-label="Recent chunked jobs">
            {recent.map((j) => (
              <li key={j.id}>
                <a href={`?job=${j.id}`}>
                  {j.sourceAsset?.filename ?? j.id} → {j.preset?.name ?? "?"}
                </a>{" "}
                <StatusBadge status={j.status} />
              </li>
            ))}
          </ul>
        )}
      </section>
    </div>
  );
}

function PipelineView({ jobId, onError }: { jobId: string; onError: OnError }) {
  const [job, setJob] = useState<Job | null>(null);
  const [missing, setMissing] = useState(false);
  const [state, setState] = useState<PipelineState>(emptyPipeline);
  const [stats, setStats] = useState<StreamStats | null>(null);
  const planned = useRef(new Set<number>());
  const tokenVersion = useTokenVersion();

  const loadJob = useCallback(async () => {
    try {
      const j = await getJob(jobId);
      if (!j) {
        setMissing(true);
        return;
      }
      setJob(j);
      if (j.chunks?.length) {
        for (const c of j.chunks) planned.current.add(c.index);
        setState((s) => withPlan(s, j.chunks!));
      }
    } catch (err) {
      onError(err);
    }
  }, [jobId, onError]);

  useEffect(() => {
    setState(emptyPipeline());
    setJob(null);
    setMissing(false);
    planned.current = new Set();
    void loadJob();
    const client = eventsClient();
    let planTimer: ReturnType<typeof setTimeout> | undefined;
    let current = true;
    const stop = followStream({
      after: 0,
      contiguous: true,
      open: (after, options) => client.streamChunkPipeline({ jobId, afterSequence: String(after) }, options),
      isLast: (ev) => ev.type === "status" && FINAL.has(ev.status),
      onStats: (s) => {
        if (!current) return; // a stopped stream (restarted with a new token) still reports "closed" later
        setStats(s);
        if (s.state === "ended") void loadJob();
      },
      onEvent: (ev, seq) => {
        setState((s) => applyEvent(s, ev, seq));
        // Chunk time ranges come from the job's plan in the database: fetch it once it exists.
        if (ev.chunkIndex >= 0 && !planned.current.has(ev.chunkIndex) && !planTimer) {
          planTimer = setTimeout(() => {
            planTimer = undefined;
            void loadJob();
          }, 250);
        }
      },
    });
    return () => {
      current = false;
      stop();
      if (planTimer) clearTimeout(planTimer);
    };
  }, [jobId, loadJob, tokenVersion]);

  if (missing) {
    return (
      <section className="panel">
        <Empty>
          No job with id <code>{jobId}</code>. <a href="/chunker/">Start a new one</a>.
        </Empty>
      </section>
    );
  }
  const chunks = [...state.chunks.values()];
  const done = chunks.filter((c) => c.state === "done").length;
  const status = state.sequences.length ? state.status : job?.status ?? "pending";
  const progress = status === "completed" ? 100 : state.sequences.length ? state.progress : job?.progress ?? 0;
  const final = FINAL.has(status);
  const sourceFps = job?.sourceAsset?.fps ?? 0;
  return (
    <div className="pipeline" data-job-id={jobId} data-status={status}>
      <section className="panel summary" aria-labelledby="job-title">
        <div className="panel-head">
          <h2 id="job-title">
            {job?.sourceAsset?.filename ?? "Job"} <span className="muted">→ {job?.preset?.name ?? "…"}</span>
          </h2>
          <StatusBadge status={status} />
          {stats && <LiveIndicator state={stats.state} error={stats.error} />}
        </div>
        <ProgressBar value={progress} label="Overall progress" status={status} />
        <dl className="stats">
          <div>
            <dt>Chunks done</dt>
            <dd data-testid="chunks-done">
              {done} / {chunks.length || job?.chunks?.length || "?"}
            </dd>
          </div>
          <div>
            <dt>fps</dt>
            <dd title={state.fps ? undefined : "encoding speed × source frame rate"}>
              {state.fps ? state.fps.toFixed(0) : sourceFps && state.speed ? `≈${(state.speed * sourceFps).toFixed(0)}` : "–"}
            </dd>
          </div>
          <div>
            <dt>Speed</dt>
            <dd>{speed(state.speed)}</dd>
          </div>
          <div>
            <dt>ETA</dt>
            <dd>{final ? "–" : eta(state.eta)}</dd>
          </div>
        </dl>
        <p
          className="streamstats"
          data-testid="stream-stats"
          data-received={stats?.received ?? 0}
          data-last-seq={stats?.lastSequence ?? 0}
          data-reconnects={stats?.reconnects ?? 0}
          data-gaps={stats?.gaps ?? 0}
          data-duplicates={stats?.duplicates ?? 0}
        >
          {stats?.received ?? 0} events (last #{stats?.lastSequence ?? 0}) · reconnects {stats?.reconnects ?? 0} · gaps{" "}
          {stats?.gaps ?? 0} · duplicates dropped {stats?.duplicates ?? 0}
        </p>
        {job?.error && status === "failed" && <p className="error-text">{job.error}</p>}
        {stats?.error && stats.state === "reconnecting" && (
          <p className="muted" role="status">
            Connection lost ({stats.error}); resuming after event #{stats.lastSequence}…
          </p>
        )}
        {status === "completed" && job?.output?.url && (
          <p className="row">
            <a className="button" href={job.output.url} target="_blank" rel="noreferrer">
              Play output
            </a>
            <a className="button" href={job.output.url} download>
              Download
            </a>
            <span className="muted">{bytes(job.output.size)}</span>
          </p>
        )}
        <Sparkline state={state} sourceFps={sourceFps} />
      </section>
      <section className="panel" aria-labelledby="chunks-title">
        <h2 id="chunks-title">Chunks</h2>
        <ChunkMap state={state} />
        <h3>Workers</h3>
        <WorkerLanes state={state} expectedWorkers={job?.chunkWorkers ?? 0} />
        <div className="legend-row" aria-hidden="true">
          {["queued", "running", "done", "failed", "cancelled"].map((s) => (
            <span key={s} className="legend-item">
              <span className={`swatch chunk-${s}`} /> {s}
            </span>
          ))}
        </div>
      </section>
      <section className="panel" aria-labelledby="log-title">
        <h2 id="log-title">Event log</h2>
        <EventLog log={state.log} />
      </section>
    </div>
  );
}

export function App() {
  const [jobId, setJobId] = useState<string | null>(jobFromUrl);
  const [error, setError] = useState("");
  useEffect(() => {
    const onPop = () => {
      setJobId(jobFromUrl());
      setError("");
    };
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);
  const onError = useCallback((err: unknown) => {
    if (!isAuthError(err)) setError(errorMessage(err));
  }, []);
  const tokenVersion = useTokenVersion();
  useEffect(() => setError(""), [tokenVersion]);
  return (
    <>
      <Header current="chunker" />
      <main className="chunker-layout">
        <div className="crumbs">
          <h1>Chunker</h1>
          {jobId && (
            <button type="button" className="link" onClick={() => openJob(null)}>
              ← New chunked job
            </button>
          )}
        </div>
        <AuthPrompt />
        <ErrorBanner error={error} onDismiss={() => setError("")} />
        {jobId ? <PipelineView key={jobId} jobId={jobId} onError={onError} /> : <StartForm onError={onError} />}
      </main>
    </>
  );
}
