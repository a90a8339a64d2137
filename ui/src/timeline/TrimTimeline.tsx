import { useCallback, useRef, type KeyboardEvent, type PointerEvent } from "react";
import { thumbnailUrl } from "../lib/api";
import { frameOf, timecode } from "../lib/format";
import type { Asset } from "../lib/types";
import { clampIn, clampOut, keyTarget, timeAtX } from "./trim";

const THUMBS = 10;
const THUMB_WIDTH = 160;

interface Props {
  asset: Asset;
  duration: number;
  fps: number;
  inPoint: number;
  outPoint: number;
  currentTime: number;
  onChange(inPoint: number, outPoint: number): void;
  onSeek(t: number): void;
}

/** Thumbnail strip with draggable in/out handles; times snap to frames of the asset's fps. */
export function TrimTimeline({ asset, duration, fps, inPoint, outPoint, currentTime, onChange, onSeek }: Props) {
  const track = useRef<HTMLDivElement>(null);
  const pct = (t: number) => `${duration > 0 ? (t / duration) * 100 : 0}%`;

  const timeAt = useCallback(
    (clientX: number) => {
      const rect = track.current?.getBoundingClientRect();
      if (!rect) return 0;
      return timeAtX(clientX - rect.left, rect.width, duration, fps);
    },
    [duration, fps],
  );

  const setIn = (t: number) => onChange(clampIn(t, outPoint, duration, fps), outPoint);
  const setOut = (t: number) => onChange(inPoint, clampOut(t, inPoint, duration, fps));

  const dragHandle = (which: "in" | "out") => (e: PointerEvent<HTMLDivElement>) => {
    e.preventDefault();
    e.stopPropagation();
    const el = e.currentTarget;
    el.setPointerCapture(e.pointerId);
    el.focus();
    const move = (ev: globalThis.PointerEvent) => {
      const t = timeAt(ev.clientX);
      if (which === "in") setInRef.current(t);
      else setOutRef.current(t);
    };
    const up = () => {
      el.removeEventListener("pointermove", move);
      el.removeEventListener("pointerup", up);
      el.removeEventListener("pointercancel", up);
    };
    el.addEventListener("pointermove", move);
    el.addEventListener("pointerup", up);
    el.addEventListener("pointercancel", up);
  };
  // Handlers registered on pointerdown must see the latest in/out points while dragging.
  const setInRef = useRef(setIn);
  const setOutRef = useRef(setOut);
  setInRef.current = setIn;
  setOutRef.current = setOut;

  const keys = (which: "in" | "out") => (e: KeyboardEvent<HTMLDivElement>) => {
    const value = which === "in" ? inPoint : outPoint;
    const set = which === "in" ? setIn : setOut;
    const next = keyTarget(e.key, e.shiftKey, value, duration, fps);
    if (next === null) return;
    e.preventDefault();
    set(next);
  };

  const thumbs = asset.kind === "video" && duration > 0;
  const handle = (which: "in" | "out", value: number) => (
    <div
      className={`handle handle-${which}`}
      role="slider"
      tabIndex={0}
      aria-label={which === "in" ? "Trim in point" : "Trim out point"}
      aria-valuemin={0}
      aria-valuemax={Number(duration.toFixed(3))}
      aria-valuenow={Number(value.toFixed(3))}
      aria-valuetext={`${timecode(value)}, frame ${frameOf(value, fps)}`}
      data-testid={`handle-${which}`}
      style={{ left: pct(value) }}
      onPointerDown={dragHandle(which)}
      onKeyDown={keys(which)}
    >
      <span className="grip" aria-hidden="true" />
    </div>
  );

  return (
    <div className="trim">
      <div
        className="track"
        ref={track}
        data-testid="timeline-track"
        onPointerDown={(e) => {
          if (e.button === 0) onSeek(timeAt(e.clientX));
        }}
      >
        <div className="strip" aria-hidden="true">
          {thumbs
            ? Array.from({ length: THUMBS }, (_, i) => {
                const t = ((i + 0.5) * duration) / THUMBS;
                return <img key={i} src={thumbnailUrl(asset, t, THUMB_WIDTH)} alt="" loading="lazy" draggable={false} />;
              })
            : <div className="wave" />}
        </div>
        <div className="shade" style={{ left: 0, width: pct(inPoint) }} />
        <div className="shade" style={{ left: pct(outPoint), right: 0 }} />
        <div className="selection" style={{ left: pct(inPoint), width: pct(outPoint - inPoint) }} />
        <div className="playhead" style={{ left: pct(Math.min(currentTime, duration)) }} aria-hidden="true" />
        {handle("in", inPoint)}
        {handle("out", outPoint)}
      </div>
      <dl className="readouts">
        <div>
          <dt>In</dt>
          <dd data-testid="readout-in">
            {timecode(inPoint)} <span className="muted">frame {frameOf(inPoint, fps)}</span>
          </dd>
        </div>
        <div>
          <dt>Out</dt>
          <dd data-testid="readout-out">
            {timecode(outPoint)} <span className="muted">frame {frameOf(outPoint, fps)}</span>
          </dd>
        </div>
        <div>
          <dt>Length</dt>
          <dd data-testid="readout-length">
            {timecode(outPoint - inPoint)}{" "}
            <span className="muted">{Math.max(0, frameOf(outPoint, fps) - frameOf(inPoint, fps))} frames</span>
          </dd>
        </div>
        <div>
          <dt>Playhead</dt>
          <dd data-testid="readout-playhead">
            {timecode(currentTime)} <span className="muted">{fps ? `${Number(fps.toFixed(3))} fps` : ""}</span>
          </dd>
        </div>
      </dl>
      <div className="row">
        <button type="button" onClick={() => setIn(currentTime)}>
          Set in at playhead
        </button>
        <button type="button" onClick={() => setOut(currentTime)}>
          Set out at playhead
        </button>
        <button type="button" onClick={() => onChange(0, duration)}>
          Reset trim
        </button>
      </div>
    </div>
  );
}
