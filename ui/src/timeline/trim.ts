// Frame-accurate trim math for the timeline (pure functions, no DOM).
// Valid in/out points are the frame boundaries k / fps within [0, duration], plus the media's end
// itself (a duration from the container is rarely a whole number of frames). Without a frame rate
// (audio) the grid is one millisecond.
import { snapToFrame } from "../lib/format";

const EPSILON = 1e-6; // in frames: absorbs float error such as 0.1 * 30 = 3.0000000000000004

function rate(fps: number): number {
  return fps > 0 ? fps : 1000;
}

/** Length of one frame in seconds (1 ms when the frame rate is unknown). */
export function frameLength(fps: number): number {
  return 1 / rate(fps);
}

/** The nearest valid point to `t`: a frame boundary, or the end of the media if that is nearer. */
export function snapTime(t: number, duration: number, fps: number): number {
  if (Number.isNaN(t)) return 0;
  const end = Math.max(0, duration);
  if (t >= end) return end;
  const snapped = snapToFrame(t, fps);
  if (end - t <= Math.abs(snapped - t)) return end;
  return Math.max(0, Math.min(end, snapped));
}

/** The last frame boundary at or before `t`. */
function floorToFrame(t: number, fps: number): number {
  const r = rate(fps);
  return Math.floor(t * r + EPSILON) / r;
}

/** A new in point for `t`: snapped, at least 0, and at least one frame before the out point. */
export function clampIn(t: number, outPoint: number, duration: number, fps: number): number {
  const latest = floorToFrame(outPoint - frameLength(fps), fps);
  return Math.max(0, Math.min(snapTime(t, duration, fps), latest));
}

/** A new out point for `t`: snapped, at most the duration, and at least one frame after the in point. */
export function clampOut(t: number, inPoint: number, duration: number, fps: number): number {
  return Math.min(Math.max(0, duration), Math.max(snapTime(t, duration, fps), inPoint + frameLength(fps)));
}

/** The time under a pointer `x` pixels from the left of a track `width` pixels wide. */
export function timeAtX(x: number, width: number, duration: number, fps: number): number {
  if (!(width > 0)) return 0;
  const fraction = Math.max(0, Math.min(1, x / width));
  return snapTime(fraction * duration, duration, fps);
}

/**
 * Where a key moves a handle now at `value` (before clamping), or null for keys it ignores:
 * ←/↓ and →/↑ one frame (to the neighbouring frame boundary, also from an end that is not on one),
 * with Shift one second, PageDown/PageUp ten seconds, Home/End the start/end of the media.
 */
export function keyTarget(key: string, shift: boolean, value: number, duration: number, fps: number): number | null {
  const r = rate(fps);
  switch (key) {
    case "ArrowLeft":
    case "ArrowDown":
      return shift ? value - 1 : (Math.ceil(value * r - EPSILON) - 1) / r;
    case "ArrowRight":
    case "ArrowUp":
      return shift ? value + 1 : (Math.floor(value * r + EPSILON) + 1) / r;
    case "PageDown":
      return value - 10;
    case "PageUp":
      return value + 10;
    case "Home":
      return 0;
    case "End":
      return duration;
    default:
      return null;
  }
}
