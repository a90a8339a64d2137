import { describe, expect, it } from "vitest";
import { frameOf } from "../lib/format";
import { clampIn, clampOut, frameLength, keyTarget, snapTime, timeAtX } from "./trim";

const FPS = 25;
const onFrame = (t: number, fps = FPS) => expect(Math.abs(t * fps - Math.round(t * fps))).toBeLessThan(1e-9);

/** Press `key` on a handle, as TrimTimeline does: the key's target, clamped by the handle's rule. */
function press(which: "in" | "out", key: string, sel: { in: number; out: number }, duration: number, fps: number, shift = false) {
  const value = which === "in" ? sel.in : sel.out;
  const next = keyTarget(key, shift, value, duration, fps);
  if (next === null) return sel;
  return which === "in"
    ? { in: clampIn(next, sel.out, duration, fps), out: sel.out }
    : { in: sel.in, out: clampOut(next, sel.in, duration, fps) };
}

describe("frameLength", () => {
  it("is 1/fps, or a millisecond without a frame rate", () => {
    expect(frameLength(25)).toBe(0.04);
    expect(frameLength(0)).toBe(0.001);
    expect(frameLength(-1)).toBe(0.001);
  });
});

describe("snapTime", () => {
  it("snaps to the nearest frame boundary", () => {
    expect(snapTime(1.01, 10, FPS)).toBe(1);
    expect(snapTime(1.03, 10, FPS)).toBe(1.04);
    onFrame(snapTime(7.777, 10, FPS));
  });

  it("clamps to [0, duration]", () => {
    expect(snapTime(-3, 10, FPS)).toBe(0);
    expect(snapTime(12, 10, FPS)).toBe(10);
    expect(snapTime(NaN, 10, FPS)).toBe(0);
    expect(snapTime(5, 0, FPS)).toBe(0);
  });

  it("treats the end of a media whose duration is not a whole number of frames as a valid point", () => {
    // 10.01 s at 25 fps: the last boundary is 10.00; the end itself must stay reachable
    expect(snapTime(10.01, 10.01, FPS)).toBe(10.01);
    expect(snapTime(10.009, 10.01, FPS)).toBe(10.01);
    expect(snapTime(10.004, 10.01, FPS)).toBe(10);
    // 10.03 s: snapping would round up to 10.04, past the end
    expect(snapTime(10.03, 10.03, FPS)).toBe(10.03);
    expect(snapTime(10.025, 10.03, FPS)).toBe(10.03);
    expect(snapTime(10.012, 10.03, FPS)).toBe(10.0);
  });

  it("uses a millisecond grid without a frame rate", () => {
    expect(snapTime(2.34567, 10, 0)).toBe(2.346);
    expect(snapTime(9.9999, 9.9999, 0)).toBe(9.9999);
  });
});

describe("clampIn / clampOut", () => {
  it("keep in < out by at least one frame, whatever is dragged where", () => {
    expect(clampIn(5, 4, 10, FPS)).toBe(3.96);
    expect(clampIn(4, 4, 10, FPS)).toBe(3.96);
    expect(clampOut(1, 2, 10, FPS)).toBe(2.04);
    expect(clampOut(2, 2, 10, FPS)).toBe(2.04);
  });

  it("clamp to the media", () => {
    expect(clampIn(-1, 4, 10, FPS)).toBe(0);
    expect(clampOut(11, 2, 10, FPS)).toBe(10);
    expect(clampOut(Infinity, 2, 10, FPS)).toBe(10);
  });

  it("snap to frames", () => {
    expect(clampIn(1.013, 4, 10, FPS)).toBe(1);
    expect(clampOut(3.03, 1, 10, FPS)).toBe(3.04);
  });

  it("keep the in point on a frame when the out point is an unaligned end", () => {
    // out = 10.01 (the end): the latest in point is the last boundary a frame before it, 9.96
    const latest = clampIn(10.01, 10.01, 10.01, FPS);
    expect(latest).toBe(9.96);
    onFrame(latest);
    expect(10.01 - latest).toBeGreaterThanOrEqual(frameLength(FPS));
    // out = 10.03: 9.99 is not a frame; 10.00 would leave less than a frame
    expect(clampIn(20, 10.03, 10.03, FPS)).toBe(9.96);
  });

  it("leave in = 0 when the out point is less than a frame from the start", () => {
    expect(clampIn(0.5, 0.02, 10, FPS)).toBe(0);
  });

  it("work without a frame rate (1 ms)", () => {
    expect(clampIn(5, 4, 10, 0)).toBe(3.999);
    expect(clampOut(1, 2, 10, 0)).toBeCloseTo(2.001, 12);
  });

  it("are exact for frame times that are inexact in binary (29.97 fps)", () => {
    const fps = 30000 / 1001;
    for (const k of [1, 10, 299, 1000]) {
      const t = k / fps;
      expect(frameOf(clampIn(t, 100, 100, fps), fps)).toBe(k);
      expect(frameOf(clampOut(t, 0, 100, fps), fps)).toBe(k);
    }
  });
});

describe("timeAtX", () => {
  it("maps a pointer position on the track to a snapped time", () => {
    expect(timeAtX(0, 800, 10, FPS)).toBe(0);
    expect(timeAtX(400, 800, 10, FPS)).toBe(5);
    expect(timeAtX(801, 800, 10, FPS)).toBe(10);
    onFrame(timeAtX(123, 800, 10, FPS));
  });

  it("clamps positions off the track", () => {
    expect(timeAtX(-50, 800, 10, FPS)).toBe(0);
    expect(timeAtX(5000, 800, 10, FPS)).toBe(10);
  });

  it("never seeks past an unaligned end", () => {
    expect(timeAtX(800, 800, 10.03, FPS)).toBe(10.03);
    expect(timeAtX(799.9, 800, 10.03, FPS)).toBeLessThanOrEqual(10.03);
  });

  it("is 0 for a track that has no width (not laid out)", () => {
    expect(timeAtX(10, 0, 10, FPS)).toBe(0);
    expect(timeAtX(10, NaN, 10, FPS)).toBe(0);
  });
});

describe("keyboard", () => {
  it("ignores other keys", () => {
    expect(keyTarget("a", false, 1, 10, FPS)).toBeNull();
    expect(keyTarget("Enter", true, 1, 10, FPS)).toBeNull();
  });

  it("moves one frame per arrow, one second with Shift, ten with PageUp/PageDown", () => {
    expect(keyTarget("ArrowRight", false, 1, 10, FPS)).toBe(1.04);
    expect(keyTarget("ArrowUp", false, 1, 10, FPS)).toBe(1.04);
    expect(keyTarget("ArrowLeft", false, 1, 10, FPS)).toBe(0.96);
    expect(keyTarget("ArrowDown", false, 1, 10, FPS)).toBe(0.96);
    expect(keyTarget("ArrowRight", true, 1, 10, FPS)).toBe(2);
    expect(keyTarget("ArrowLeft", true, 1, 10, FPS)).toBe(0);
    expect(keyTarget("PageUp", false, 1, 20, FPS)).toBe(11);
    expect(keyTarget("PageDown", false, 11, 20, FPS)).toBe(1);
    expect(keyTarget("Home", false, 5, 10, FPS)).toBe(0);
    expect(keyTarget("End", false, 5, 10, FPS)).toBe(10);
  });

  it("ten presses of ← from the end of a 4 s clip give frame 90 (as the browser test does)", () => {
    let sel = { in: 0, out: 4 };
    for (let i = 0; i < 10; i++) sel = press("out", "ArrowLeft", sel, 4, FPS);
    expect(sel.out).toBeCloseTo(3.6, 12);
    expect(frameOf(sel.out, FPS)).toBe(90);
  });

  it("steps frame by frame through 29.97 fps without skipping or repeating one", () => {
    const fps = 30000 / 1001;
    let sel = { in: 0, out: 60 };
    const frames: number[] = [];
    for (let i = 0; i < 500; i++) {
      sel = press("in", "ArrowRight", sel, 60, fps);
      frames.push(frameOf(sel.in, fps));
    }
    expect(frames).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
  });

  it("from an unaligned end, ← goes to the last frame boundary, not one frame further", () => {
    // 10.01 s: the boundaries are ..., 9.96, 10.00, then the end
    let sel = { in: 0, out: 10.01 };
    sel = press("out", "ArrowLeft", sel, 10.01, FPS);
    expect(sel.out).toBe(10);
    sel = press("out", "ArrowLeft", sel, 10.01, FPS);
    expect(sel.out).toBe(9.96);
    sel = press("out", "ArrowRight", sel, 10.01, FPS);
    sel = press("out", "ArrowRight", sel, 10.01, FPS);
    expect(sel.out).toBe(10.01);
    sel = press("out", "ArrowRight", sel, 10.01, FPS);
    expect(sel.out).toBe(10.01);
  });

  it("End and Reset give back the whole media, so an untouched selection is not a trim", () => {
    // before: End/Reset snapped 10.01 to 10.00, which read as a trim of the last frame
    let sel = { in: 0, out: 10 };
    sel = press("out", "End", sel, 10.01, FPS);
    expect(sel.out).toBe(10.01);
    expect(snapTime(10.01, 10.01, FPS)).toBe(10.01); // what AssetDetail keeps after onChange(0, duration)
  });

  it("cannot push a handle through the other one or off the media", () => {
    let sel = { in: 2, out: 2.04 };
    sel = press("in", "ArrowRight", sel, 10, FPS);
    expect(sel).toEqual({ in: 2, out: 2.04 });
    sel = press("out", "ArrowLeft", sel, 10, FPS);
    expect(sel).toEqual({ in: 2, out: 2.04 });
    sel = press("in", "End", sel, 10, FPS);
    expect(sel.in).toBe(2);
    sel = press("out", "Home", sel, 10, FPS);
    expect(sel.out).toBe(2.04);
    sel = press("in", "PageDown", sel, 10, FPS);
    expect(sel.in).toBe(0);
    sel = press("out", "PageUp", sel, 10, FPS);
    sel = press("out", "PageUp", sel, 10, FPS);
    expect(sel.out).toBe(10);
    expect(sel.in).toBeLessThan(sel.out);
  });
});
