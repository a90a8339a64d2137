import { useState } from "react";
import { Empty, LiveIndicator, ProgressBar, StatusBadge } from "../components/common";
import { cancelJob, deleteJob, retryJob } from "../lib/api";
import { errorMessage } from "../lib/graphql";
import { bytes, eta, sizeChange, spaceSaved, speed, timecode } from "../lib/format";
import type { Statistics } from "../lib/api";
import type { Job } from "../lib/types";
import { deletePrompt, jobActions } from "./jobActions";
import { LOCKED_JOBS, queueView } from "./panels";

interface Props {
  jobs: Job[];
  live: { state: string; error: string };
  /** Reads are refused for want of the API token: the queue is locked, not empty. */
  locked: boolean;
  /** Space saved by all completed jobs (the statistics query); null until read. */
  stats: Statistics | null;
  onJobChanged(job: Job): void;
  onJobDeleted(id: string): void;
}

function JobRow({ job, onJobChanged, onJobDeleted }: Omit<Props, "jobs" | "live" | "locked" | "stats"> & { job: Job }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const [confirming, setConfirming] = useState(false);
  const [withOutput, setWithOutput] = useState(false);
  const act = async (fn: (id: string) => Promise<Job>) => {
    setBusy(true);
    setError("");
    try {
      onJobChanged(await fn(job.id));
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };
  const remove = async () => {
    setBusy(true);
    setError("");
    try {
      await deleteJob(job.id, withOutput);
      onJobDeleted(job.id);
    } catch (err) {
      setError(errorMessage(err));
      setConfirming(false);
      setBusy(false);
    }
  };
  const { cancel: active, retry: retryable, remove: deletable } = jobActions(job.status);
  const name = job.sourceAsset?.filename ?? "(deleted asset)";
  const url = job.output?.url;
  return (
    <li className={`job job-${job.status}`} data-job-id={job.id} data-status={job.status}>
      <div className="job-head">
        <span className="job-name" title={job.id}>
          {name}
        </span>
        <StatusBadge status={job.status} />
      </div>
      <ProgressBar value={job.status === "completed" ? 100 : job.progress} label={`Progress of ${name}`} status={job.status} />
      <div className="job-meta">
        <span>→ {job.preset?.name ?? "?"}</span>
        <span>speed {speed(job.speed)}</span>
        {active && <span>ETA {eta(job.eta)}</span>}
        {(job.trimStart != null || job.trimEnd != null) && (
          <span>
            trim {timecode(job.trimStart ?? 0)}–{job.trimEnd != null ? timecode(job.trimEnd) : "end"}
          </span>
        )}
        {job.chunked && (
          <a href={`/chunker/?job=${encodeURIComponent(job.id)}`}>chunked · open in Chunker</a>
        )}
      </div>
      {job.error && job.status !== "completed" && <p className="error-text job-error">{job.error}</p>}
      {error && (
        <p className="error-text" role="alert">
          {error}
        </p>
      )}
      <div className="row">
        {active && (
          <button type="button" disabled={busy} onClick={() => act(cancelJob)} aria-label={`Cancel job ${name}`}>
            Cancel
          </button>
        )}
        {retryable && (
          <button type="button" disabled={busy} onClick={() => act(retryJob)} aria-label={`Retry job ${name}`}>
            Retry
          </button>
        )}
        {job.status === "completed" && url && (
          <>
            <a className="button" href={url} target="_blank" rel="noreferrer">
              Play output
            </a>
            <a className="button" href={url} download>
              Download
            </a>
            <span className="muted">{sizeChange(job.output?.size, job.sizeRatio)}</span>
          </>
        )}
        {deletable && !confirming && (
          <button
            type="button"
            className="danger"
            disabled={busy}
            onClick={() => setConfirming(true)}
            aria-label={`Delete job ${name}`}
            title="Delete job"
          >
            Delete
          </button>
        )}
      </div>
      {deletable && confirming && (
        <div className="confirm" role="group" aria-label={`Confirm deleting job ${name}`}>
          {deletePrompt(name, withOutput)}
          <label>
            <input type="checkbox" checked={withOutput} onChange={(e) => setWithOutput(e.target.checked)} /> also
            delete the output file
          </label>
          <button type="button" className="danger" onClick={remove} disabled={busy}>
            Yes, delete
          </button>
          <button type="button" onClick={() => setConfirming(false)} disabled={busy}>
            Keep it
          </button>
        </div>
      )}
    </li>
  );
}

export function JobQueue({ jobs, live, locked, stats, onJobChanged, onJobDeleted }: Props) {
  const saved = spaceSaved(stats);
  const view = queueView(locked, jobs.length);
  return (
    <section className="panel queue" aria-labelledby="queue-title">
      <div className="panel-head">
        <h2 id="queue-title">Jobs</h2>
        {stats && saved && !locked && (
          <span
            className="muted queue-saved"
            data-testid="space-saved"
            data-bytes-saved={stats.bytesSaved}
            title={`${stats.completedJobsCompared} completed job(s): ${bytes(stats.completedBytesIn)} in, ${bytes(stats.completedBytesOut)} out`}
          >
            {saved}
          </span>
        )}
        <LiveIndicator state={live.state} error={live.error} />
      </div>
      {live.state === "reconnecting" && live.error && (
        <p className="muted live-error" role="status">
          Live updates interrupted ({live.error}); reconnecting…
        </p>
      )}
      {view === "locked" ? (
        <Empty>{LOCKED_JOBS}</Empty>
      ) : view === "empty" ? (
        <Empty>No jobs yet. Pick an asset and press Transcode.</Empty>
      ) : (
        <ul className="jobs" aria-label="Job queue">
          {jobs.map((job) => (
            <JobRow key={job.id} job={job} onJobChanged={onJobChanged} onJobDeleted={onJobDeleted} />
          ))}
        </ul>
      )}
    </section>
  );
}
