import { describe, expect, it } from "vitest";
import {
  autoBadge,
  bytes,
  clockTime,
  duration,
  eta,
  frameOf,
  sizeChange,
  snapToFrame,
  spaceSaved,
  speed,
  timecode,
} from "./format";

describe("timecode", () => {
  it("formats hours, minutes, seconds and milliseconds", () => {
    expect(timecode(0)).toBe("00:00:00.000");
    expect(timecode(83.04)).toBe("00:01:23.040");
    expect(timecode(3600 + 2 * 60 + 3.004)).toBe("01:02:03.004");
    expect(timecode(100 * 3600)).toBe("100:00:00.000");
  });

  it("rounds to the millisecond and carries into seconds and minutes", () => {
    expect(timecode(1.0004)).toBe("00:00:01.000");
    expect(timecode(1.0005)).toBe("00:00:01.001");
    expect(timecode(59.9996)).toBe("00:01:00.000");
    expect(timecode(3599.9999)).toBe("01:00:00.000");
    // float error in frame times: 3 frames at 30 fps is 0.1 s, not 0.09999...
    expect(timecode(3 / 30)).toBe("00:00:00.100");
  });

  it("puts the sign in front of a negative time instead of garbling each field", () => {
    expect(timecode(-1.5)).toBe("-00:00:01.500");
    expect(timecode(-61)).toBe("-00:01:01.000");
    // rounds to zero: no "-00:00:00.000"
    expect(timecode(-0.0001)).toBe("00:00:00.000");
    expect(timecode(-0)).toBe("00:00:00.000");
  });

  it("shows a placeholder for missing and non-finite values", () => {
    for (const v of [null, undefined, NaN, Infinity, -Infinity]) expect(timecode(v)).toBe("--:--:--.---");
  });
});

describe("snapToFrame / frameOf", () => {
  it("snaps to the nearest frame boundary", () => {
    expect(snapToFrame(1.01, 25)).toBe(1);
    expect(snapToFrame(1.03, 25)).toBe(1.04);
    expect(snapToFrame(0.02, 25)).toBe(0.04); // exactly half a frame rounds up
    expect(frameOf(1.04, 25)).toBe(26);
  });

  it("handles NTSC rates without drifting", () => {
    const fps = 30000 / 1001;
    const t = snapToFrame(10, fps);
    expect(frameOf(t, fps)).toBe(300);
    expect(t * fps).toBeCloseTo(300, 9);
    // every frame time maps back to its own frame number
    for (let k = 0; k < 2000; k += 37) expect(frameOf(snapToFrame(k / fps, fps), fps)).toBe(k);
  });

  it("rounds to the millisecond without a frame rate", () => {
    expect(snapToFrame(1.23456, 0)).toBe(1.235);
    expect(snapToFrame(1.23456, -5)).toBe(1.235);
    expect(snapToFrame(1.23456, NaN)).toBe(1.235);
    expect(frameOf(1.5, 0)).toBe(0);
  });
});

describe("duration", () => {
  it("uses seconds with one decimal below a minute", () => {
    expect(duration(0)).toBe("0.0 s");
    expect(duration(4.04)).toBe("4.0 s");
    expect(duration(59.94)).toBe("59.9 s");
  });

  it("never shows 60 s or 60.0 s: rounding carries into the minute", () => {
    expect(duration(59.96)).toBe("1 min 0 s");
    expect(duration(60)).toBe("1 min 0 s");
    expect(duration(119.6)).toBe("2 min 0 s");
    expect(duration(125.4)).toBe("2 min 5 s");
    expect(duration(3599.4)).toBe("59 min 59 s");
    expect(duration(3599.6)).toBe("1 h 0 min");
  });

  it("uses hours and minutes from an hour", () => {
    expect(duration(3600)).toBe("1 h 0 min");
    expect(duration(2 * 3600 + 5 * 60 + 59)).toBe("2 h 5 min");
  });

  it("shows a dash for missing and non-finite values", () => {
    for (const v of [null, undefined, NaN, Infinity]) expect(duration(v)).toBe("–");
  });
});

describe("bytes", () => {
  it("uses binary units with one decimal", () => {
    expect(bytes(0)).toBe("0 B");
    expect(bytes(1023)).toBe("1023 B");
    expect(bytes(1024)).toBe("1.0 KB");
    expect(bytes(1536)).toBe("1.5 KB");
    expect(bytes(5 * 1024 ** 3)).toBe("5.0 GB");
    expect(bytes(3 * 1024 ** 5)).toBe("3072.0 TB");
  });

  it("never shows 1024.0 of a unit: it goes up one", () => {
    expect(bytes(1024 * 1024 - 1)).toBe("1.0 MB");
    expect(bytes(1024 ** 3 - 1)).toBe("1.0 GB");
    expect(bytes(1024 * 1023.9)).toBe("1023.9 KB");
  });

  it("shows a dash when unknown", () => {
    expect(bytes(null)).toBe("–");
    expect(bytes(undefined)).toBe("–");
  });
});

describe("speed / eta", () => {
  it("formats a speed factor, or a dash for none", () => {
    expect(speed(1.234)).toBe("1.23×");
    expect(speed(12)).toBe("12.00×");
    for (const v of [0, null, undefined, NaN]) expect(speed(v)).toBe("–");
  });

  it("formats a positive ETA like a duration, anything else as a dash", () => {
    expect(eta(90)).toBe("1 min 30 s");
    expect(eta(2.25)).toBe("2.3 s");
    for (const v of [0, -3, null, undefined, NaN, Infinity]) expect(eta(v)).toBe("–");
  });
});

describe("clockTime", () => {
  it("is HH:MM:SS.mmm in local time with hours 00-23 (midnight is not 24:00)", () => {
    const midnight = new Date(2026, 0, 1, 0, 0, 0, 5).getTime() / 1000;
    expect(clockTime(midnight)).toBe("00:00:00.005");
    const afternoon = new Date(2026, 5, 30, 13, 5, 9, 42).getTime() / 1000;
    expect(clockTime(afternoon)).toBe("13:05:09.042");
    const late = new Date(2026, 5, 30, 23, 59, 59, 999).getTime() / 1000;
    expect(clockTime(late)).toBe("23:59:59.999");
  });
});

describe("sizeChange", () => {
  it("shows the output size and its change against the source, rounded to a percent", () => {
    expect(sizeChange(12.3 * 1024 * 1024, 0.58)).toBe("12.3 MB (−42 %)");
    expect(sizeChange(1536, 1.5)).toBe("1.5 KB (+50 %)");
    expect(sizeChange(2048, 0.4249)).toBe("2.0 KB (−58 %)");
    expect(sizeChange(500, 2.996)).toBe("500 B (+200 %)");
  });

  it("says ±0 % when the size barely changed (no '−0 %')", () => {
    expect(sizeChange(1000, 1)).toBe("1000 B (±0 %)");
    expect(sizeChange(1000, 0.996)).toBe("1000 B (±0 %)");
    expect(sizeChange(1000, 1.004)).toBe("1000 B (±0 %)");
  });

  it("shows only the size when the change is unknown", () => {
    expect(sizeChange(2048, null)).toBe("2.0 KB");
    expect(sizeChange(2048, undefined)).toBe("2.0 KB");
    expect(sizeChange(2048, NaN)).toBe("2.0 KB");
    expect(sizeChange(null, 0.5)).toBe("–");
  });
});

describe("spaceSaved (the job queue's header)", () => {
  const GB = 1024 ** 3;
  const totals = (bytesIn: number, bytesOut: number, jobs = 3) => ({
    completedBytesIn: bytesIn,
    completedBytesOut: bytesOut,
    completedJobsCompared: jobs,
  });

  it("shows the bytes saved and the change of the total size", () => {
    expect(spaceSaved(totals(3.15 * GB, 1.95 * GB))).toBe("Saved 1.2 GB (−38 %)");
    expect(spaceSaved(totals(10 * 1024 * 1024, 1024 * 1024))).toBe("Saved 9.0 MB (−90 %)");
  });

  it("says honestly when the outputs are bigger than their sources", () => {
    expect(spaceSaved(totals(1 * GB, 1.3 * GB))).toBe("Outputs 307.2 MB larger (+30 %)");
    expect(spaceSaved(totals(100, 300))).toBe("Outputs 200 B larger (+200 %)");
  });

  it("never shows −0 % or +0 % for a change that rounds to nothing", () => {
    expect(spaceSaved(totals(1000, 1000))).toBe("Saved 0 B (±0 %)");
    expect(spaceSaved(totals(100_000, 99_900))).toBe("Saved 100 B (±0 %)");
    expect(spaceSaved(totals(100_000, 100_100))).toBe("Outputs 100 B larger (±0 %)");
  });

  it("shows nothing before a completed job can be compared", () => {
    expect(spaceSaved(null)).toBeNull();
    expect(spaceSaved(undefined)).toBeNull();
    expect(spaceSaved(totals(0, 0, 0))).toBeNull();
    expect(spaceSaved(totals(0, 500, 1))).toBeNull(); // no source bytes: no ratio
  });
});

describe("autoBadge (automatic transcoding in the library)", () => {
  it("labels the mark and puts a skip's reason in the tooltip", () => {
    expect(autoBadge("queued")).toEqual({
      text: "auto: queued",
      title: "Automatic transcoding: a job was created with the server's preset",
    });
    expect(autoBadge("skipped", "already mp4 with h264 video")).toEqual({
      text: "auto: skipped",
      title: "Automatic transcoding skipped: already mp4 with h264 video",
    });
    expect(autoBadge("skipped", null)?.title).toBe("Automatic transcoding skipped this file");
    expect(autoBadge("pending")?.text).toBe("auto: pending");
  });

  it("shows no badge for an asset without a mark", () => {
    expect(autoBadge(null)).toBeNull();
    expect(autoBadge(undefined)).toBeNull();
    expect(autoBadge("")).toBeNull();
  });
});
