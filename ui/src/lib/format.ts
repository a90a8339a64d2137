/** 83.04 -> "00:01:23.040" */
export function timecode(seconds: number | null | undefined): string {
  if (seconds == null || !Number.isFinite(seconds)) return "--:--:--.---";
  const ms = Math.round(Math.abs(seconds) * 1000);
  const sign = seconds < 0 && ms > 0 ? "-" : "";
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = Math.floor((ms % 60_000) / 1000);
  const rest = ms % 1000;
  const pad = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${sign}${pad(h)}:${pad(m)}:${pad(s)}.${pad(rest, 3)}`;
}

/** Snap a time to the nearest frame boundary. */
export function snapToFrame(seconds: number, fps: number): number {
  if (!fps || fps <= 0) return Math.round(seconds * 1000) / 1000;
  return Math.round(seconds * fps) / fps;
}

export function frameOf(seconds: number, fps: number): number {
  return Math.round(seconds * fps);
}

export function duration(seconds: number | null | undefined): string {
  if (seconds == null || !Number.isFinite(seconds)) return "–";
  // round once, to what is shown, so 119.6 s is "2 min 0 s", not "1 min 60 s"
  if (Math.round(seconds * 10) < 600) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  const m = Math.floor(whole / 60);
  const s = whole % 60;
  if (m < 60) return `${m} min ${s} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function bytes(n: number | null | undefined): string {
  if (n == null) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let i = 0;
  // a value that would show as "1024.0 KB" goes up a unit ("1.0 MB")
  while (i < units.length - 1 && (v >= 1024 || (i > 0 && Math.round(v * 10) >= 10240))) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/**
 * An output size with its change against the source: "12.3 MB (−42 %)", "1.5 MB (+8 %)".
 * `ratio` is the job's sizeRatio (output/source); without one (no source size) only the size.
 */
export function sizeChange(size: number | null | undefined, ratio: number | null | undefined): string {
  const shown = bytes(size);
  if (size == null || ratio == null || !Number.isFinite(ratio) || ratio < 0) return shown;
  return `${shown} (${percentChange(ratio)} %)`;
}

/** A ratio new/old as a signed whole percent: 0.58 -> "−42", 1.5 -> "+50", 1.004 -> "±0". */
function percentChange(ratio: number): string {
  const pct = Math.round((ratio - 1) * 100);
  return pct === 0 ? "±0" : pct < 0 ? `−${-pct}` : `+${pct}`; // U+2212 minus sign
}

/** The byte totals of the `statistics` query (completed jobs whose source still exists). */
export interface SpaceTotals {
  completedBytesIn: number;
  completedBytesOut: number;
  completedJobsCompared: number;
}

/**
 * The space completed jobs saved: "Saved 1.2 GB (−38 %)", or when the outputs are bigger than their
 * sources "Outputs 300.0 MB larger (+12 %)"; null before any job can be compared.
 */
export function spaceSaved(totals: SpaceTotals | null | undefined): string | null {
  if (!totals || totals.completedJobsCompared <= 0 || !(totals.completedBytesIn > 0)) return null;
  const { completedBytesIn: inBytes, completedBytesOut: outBytes } = totals;
  const change = percentChange(outBytes / inBytes);
  if (outBytes > inBytes) return `Outputs ${bytes(outBytes - inBytes)} larger (${change} %)`;
  return `Saved ${bytes(inBytes - outBytes)} (${change} %)`;
}

/** The library's badge for an asset's automatic transcoding mark (MPR_AUTO_PRESET); null when it has none. */
export function autoBadge(
  status: string | null | undefined,
  reason?: string | null,
): { text: string; title: string } | null {
  if (!status) return null;
  const titles: Record<string, string> = {
    pending: "Automatic transcoding: a job is created once the file is ready",
    queued: "Automatic transcoding: a job was created with the server's preset",
    skipped: "Automatic transcoding skipped this file",
  };
  const title = status === "skipped" && reason ? `Automatic transcoding skipped: ${reason}` : titles[status] ?? status;
  return { text: `auto: ${status}`, title };
}

export function speed(x: number | null | undefined): string {
  return x ? `${x.toFixed(2)}×` : "–";
}

export function eta(seconds: number | null | undefined): string {
  if (seconds == null || seconds <= 0 || !Number.isFinite(seconds)) return "–";
  return duration(seconds);
}

/** Local wall-clock time of a Unix timestamp, "13:05:09.042" (hours 00-23 in every locale). */
export function clockTime(ts: number): string {
  const d = new Date(ts * 1000);
  const pad = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}
