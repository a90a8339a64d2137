import { useEffect, useId, useRef, useState } from "react";
import { ErrorBanner, StatusBadge } from "../components/common";
import { createJob, defaultPreset, deleteAsset, mediaUrl, updateAsset } from "../lib/api";
import { errorMessage } from "../lib/graphql";
import { bytes, duration as fmtDuration } from "../lib/format";
import type { Asset, Job, Preset } from "../lib/types";
import { TrimTimeline } from "./TrimTimeline";
import { snapTime } from "./trim";

/** What "Trim" does: the copy preset cuts without re-encoding, so the output starts at a keyframe. */
const TRIM_NOTE =
  "fast, no re-encode (copy preset): starts at the previous keyframe; choose a preset and Transcode for a frame-exact cut";

interface Props {
  asset: Asset;
  presets: Preset[];
  onJobCreated(job: Job): void;
  onAssetChanged(asset: Asset): void;
  onAssetDeleted(id: string): void;
}

export function AssetDetail({ asset, presets, onJobCreated, onAssetChanged, onAssetDeleted }: Props) {
  const duration = asset.duration ?? 0;
  const fps = asset.fps ?? 0;
  const media = useRef<HTMLVideoElement & HTMLAudioElement>(null);
  const [inPoint, setInPoint] = useState(0);
  const [outPoint, setOutPoint] = useState(duration);
  const [currentTime, setCurrentTime] = useState(0);
  const [presetId, setPresetId] = useState("");
  const [comments, setComments] = useState(asset.comments ?? "");
  const [busy, setBusy] = useState("");
  const [error, setError] = useState("");
  const [notice, setNotice] = useState("");
  const [confirming, setConfirming] = useState(false);
  const ids = { preset: useId(), comments: useId(), trimNote: useId() };

  useEffect(() => {
    setInPoint(0);
    setOutPoint(asset.duration ?? 0);
    setCurrentTime(0);
    setComments(asset.comments ?? "");
    setError("");
    setNotice("");
    setConfirming(false);
  }, [asset.id]); // only when another asset is selected, not on every refresh of this one

  useEffect(() => {
    if (!presetId && presets.length) {
      const preferred = defaultPreset(presets.filter((p) => asset.kind === "video" || !p.videoCodec)) ?? presets[0];
      setPresetId(preferred.id);
    }
  }, [presets, presetId]);

  const copyPreset = presets.find((p) => p.name === "copy");
  const trimmed = inPoint > 0.0005 || (duration > 0 && outPoint < duration - 0.0005);
  const ready = asset.status === "ready";

  const start = async (kind: "transcode" | "trim") => {
    const preset = kind === "trim" ? copyPreset : presets.find((p) => p.id === presetId);
    if (!preset) {
      setError(kind === "trim" ? "There is no 'copy' preset to trim with." : "Choose a preset first.");
      return;
    }
    setBusy(kind);
    setError("");
    setNotice("");
    try {
      const job = await createJob({
        sourceAssetId: asset.id,
        presetId: preset.id,
        trimStart: trimmed ? Number(inPoint.toFixed(6)) : undefined,
        trimEnd: trimmed ? Number(outPoint.toFixed(6)) : undefined,
      });
      onJobCreated(job);
      setNotice(`${kind === "trim" ? "Trim" : "Transcode"} job queued with preset ${preset.name}.`);
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy("");
    }
  };

  const saveComments = async () => {
    setBusy("comments");
    setError("");
    try {
      onAssetChanged(await updateAsset(asset.id, comments));
      setNotice("Comments saved.");
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy("");
    }
  };

  const remove = async () => {
    setBusy("delete");
    setError("");
    try {
      await deleteAsset(asset.id);
      onAssetDeleted(asset.id);
    } catch (err) {
      setError(errorMessage(err));
      setConfirming(false);
    } finally {
      setBusy("");
    }
  };

  const seek = (t: number) => {
    setCurrentTime(t);
    if (media.current) media.current.currentTime = t;
  };

  // The API's signed URL changes now and then (a new expiry); the player keeps the one it started with.
  const [src] = useState(() => mediaUrl(asset));
  return (
    <section className="panel detail" aria-labelledby="detail-title">
      <div className="panel-head">
        <h2 id="detail-title">{asset.filename}</h2>
        <StatusBadge status={asset.status} />
      </div>
      <p className="meta">
        {asset.kind} · {fmtDuration(asset.duration)} · {asset.width && asset.height ? `${asset.width}×${asset.height} · ` : ""}
        {asset.fps ? `${Number(asset.fps.toFixed(3))} fps · ` : ""}
        {[asset.videoCodec, asset.audioCodec].filter(Boolean).join(" + ") || "–"} · {bytes(asset.size)}
      </p>
      {asset.error && <p className="error-text">{asset.error}</p>}
      <ErrorBanner error={error} onDismiss={() => setError("")} />
      {notice && (
        <p className="notice" role="status">
          {notice}
        </p>
      )}
      <div className="player">
        {asset.kind === "audio" ? (
          <audio
            ref={media}
            src={src}
            controls
            preload="metadata"
            aria-label={`Audio player: ${asset.filename}`}
            onTimeUpdate={(e) => setCurrentTime(e.currentTarget.currentTime)}
            onSeeked={(e) => setCurrentTime(e.currentTarget.currentTime)}
          />
        ) : (
          <video
            ref={media}
            src={src}
            controls
            preload="metadata"
            playsInline
            aria-label={`Video player: ${asset.filename}`}
            onTimeUpdate={(e) => setCurrentTime(e.currentTarget.currentTime)}
            onSeeked={(e) => setCurrentTime(e.currentTarget.currentTime)}
          />
        )}
      </div>
      {duration > 0 ? (
        <TrimTimeline
          asset={asset}
          duration={duration}
          fps={fps}
          inPoint={inPoint}
          outPoint={outPoint}
          currentTime={currentTime}
          onSeek={seek}
          onChange={(a, b) => {
            setInPoint(snapTime(a, duration, fps));
            setOutPoint(snapTime(b, duration, fps));
          }}
        />
      ) : (
        <p className="muted">No duration known for this asset: the timeline is unavailable.</p>
      )}
      <div className="actions">
        <label htmlFor={ids.preset}>Preset</label>
        <select id={ids.preset} value={presetId} onChange={(e) => setPresetId(e.target.value)}>
          {presets.length === 0 && <option value="">No presets</option>}
          {presets.map((p) => (
            <option key={p.id} value={p.id}>
              {p.name} ({p.container})
            </option>
          ))}
        </select>
        <button type="button" className="primary" disabled={!ready || !!busy} onClick={() => start("transcode")}>
          {busy === "transcode" ? "Starting…" : trimmed ? "Transcode selection" : "Transcode"}
        </button>
        <button
          type="button"
          disabled={!ready || !!busy || !copyPreset}
          title={TRIM_NOTE}
          aria-describedby={ids.trimNote}
          onClick={() => start("trim")}
        >
          {busy === "trim" ? "Starting…" : "Trim"}
        </button>
      </div>
      <p id={ids.trimNote} className="muted trim-note" data-testid="trim-note">
        Trim: {TRIM_NOTE}
      </p>
      {!ready && <p className="muted">Only ready assets can be transcoded.</p>}
      <div className="comments">
        <label htmlFor={ids.comments}>Comments</label>
        <textarea id={ids.comments} rows={3} value={comments} onChange={(e) => setComments(e.target.value)} />
        <div className="row">
          <button type="button" disabled={!!busy || comments === (asset.comments ?? "")} onClick={saveComments}>
            {busy === "comments" ? "Saving…" : "Save comments"}
          </button>
          {!confirming ? (
            <button type="button" className="danger" disabled={!!busy} onClick={() => setConfirming(true)}>
              Delete asset
            </button>
          ) : (
            <span className="confirm" role="group" aria-label="Confirm delete">
              Delete {asset.filename} from the library?
              <button type="button" className="danger" onClick={remove} disabled={busy === "delete"}>
                Yes, delete
              </button>
              <button type="button" onClick={() => setConfirming(false)}>
                Keep it
              </button>
            </span>
          )}
        </div>
      </div>
    </section>
  );
}
