"""Benchmark the chunked pipeline against a single-pass encode and a naive ``xargs -P`` split.

Usage::

    .venv/bin/python bench/chunker.py [--seconds 60] [--workers 2] [--chunk-seconds 10] [--repeat 1]

On a generated 60 s 720p clip (keyframe every 10 s) and a sparse-keyframe
clip (every 13 s) it measures, side by side in one run:

- wall time of a single-pass encode, the MPR chunked pipeline (``workers``
  threads, real ``Pipeline`` with its database rows and events on SQLite)
  and a naive ``xargs -P <workers>`` of ffmpeg over ``chunk-seconds`` chunks,
  each with ``-threads 1`` per ffmpeg and with ffmpeg's default threads;
- output size and PSNR (vs the source) of chunked vs single-pass, and the
  frame counts of all of them.

All three variants do the same work: video, the audio track, and (for the
split ones) the concat. CPU seconds (children's user+sys) are printed too:
on a shared machine the wall-clock speed-up depends on the load, the CPU
cost does not. ``--repeat N`` runs N interleaved rounds and keeps each variant's fastest.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRESET_NAME = "h264-720p"


def make_source(path: Path, seconds: float, gop: int) -> Path:
    """A 720p25 testsrc2 clip with a sine tone, keyframes exactly every ``gop`` frames."""
    if path.exists():
        return path
    from mpr.settings import get_settings

    argv = [
        get_settings().ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "16", "-pix_fmt", "yuv420p",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "192k", "-shortest", str(path),
    ]  # fmt: skip
    subprocess.run(argv, check=True)
    return path


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _with_threads(argv: list[str], output: Path, threads: int | None) -> list[str]:
    from mpr.chunker.encode import limit_threads

    return limit_threads(argv, output, threads)


def single_pass(source: Path, out: Path, preset, threads: int | None) -> None:
    from mpr import ffmpeg

    ffmpeg.run(_with_threads(ffmpeg.build_command(source, out, preset), out, threads))


def chunked(source: Path, out: Path, preset, threads: int | None, workers: int, chunk_seconds: float) -> None:
    from mpr.chunker.pipeline import Pipeline
    from mpr.db import run_sync

    job_id = run_sync(_new_job())
    pipe = Pipeline(job_id, source, out, preset, chunk_seconds=chunk_seconds, workers=workers)
    pipe.threads = threads
    pipe.run()


def _xargs_quote(arg: str) -> str:
    # xargs splits on blanks and treats quotes and backslashes specially: escape every non-alphanumeric
    return "".join(c if c.isalnum() else "\\" + c for c in arg)


def naive(source: Path, out: Path, preset, threads: int | None, workers: int, chunk_seconds: float, work: Path):
    """``xargs -P workers ffmpeg`` over fixed time chunks (input seek + -t) and the audio, then concat."""
    from mpr import ffmpeg
    from mpr.chunker.concat import concat
    from mpr.chunker.encode import part_preset
    from mpr.probe import probe

    work.mkdir(parents=True, exist_ok=True)
    duration = probe(source).duration
    lines, parts = [], []
    audio = work / "audio.mp4"
    lines.append(ffmpeg.build_command(source, audio, part_preset(preset), video=False)[1:])
    start, i = 0.0, 0
    while start < duration - 1e-6:
        part = work / f"part{i:03d}.mp4"
        argv = ffmpeg.build_command(
            source,
            part,
            part_preset(preset),
            start=start or None,
            end=min(duration, start + chunk_seconds),
            audio=False,
        )
        lines.append(_with_threads(argv, part, threads)[1:])
        parts.append(part)
        start += chunk_seconds
        i += 1
    jobs = work / "jobs.txt"
    jobs.write_text("\n".join(" ".join(_xargs_quote(a) for a in line) for line in lines) + "\n")
    with jobs.open("rb") as stdin:
        subprocess.run(
            ["xargs", "-P", str(workers), "-L", "1", ffmpeg.ffmpeg_binary()],
            stdin=stdin, stdout=subprocess.DEVNULL, check=True,
        )  # fmt: skip
    concat(parts, audio, out, preset)
    shutil.rmtree(work, ignore_errors=True)


async def _new_job() -> str:
    from mpr import jobs
    from mpr.models import JobStatus, TranscodeJob

    job = await TranscodeJob.create(output_path=f"bench-{time.time_ns()}.mp4", chunked=True)
    await jobs.transition(job.id, JobStatus.PROCESSING)
    return str(job.id)


def psnr(out: Path, source: Path) -> float:
    """Average PSNR (all planes) of ``out`` against ``source``."""
    from mpr.settings import get_settings

    argv = [get_settings().ffmpeg, "-hide_banner", "-nostdin", "-i", str(out), "-i", str(source),
            "-lavfi", "[0:v][1:v]psnr", "-f", "null", "-"]  # fmt: skip
    err = subprocess.run(argv, capture_output=True, text=True, check=True).stderr
    m = re.search(r"PSNR .*average:([0-9.]+|inf)", err)
    if not m:
        raise RuntimeError(f"no PSNR in ffmpeg output: {err[-500:]}")
    return float(m.group(1))


def frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return sum(1 for p in c.demux(v) if p.pts is not None)


def timed(fn, repeat: int) -> tuple[float, float]:
    """Fastest wall time of ``repeat`` runs, and the CPU seconds of that run."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        cpu0, t0 = _cpu(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        best = min(best, (wall, cpu))
    return best


def setup(base: Path) -> None:
    os.environ.update(
        MPR_DATABASE_URL=f"sqlite://{base / 'bench.db'}",
        MPR_VAR_DIR=str(base / "var"),
        MEDIA_IN=str(base / "in"),
        MEDIA_OUT=str(base / "out"),
        MPR_LOG_LEVEL="WARNING",
    )
    os.environ.pop("MPR_REDIS_URL", None)
    from tortoise import Tortoise

    from mpr.db import run_sync
    from mpr.settings import get_settings

    get_settings.cache_clear()
    run_sync(Tortoise.generate_schemas())


def quality(base: Path, results: dict, normal: Path, sparse: Path, preset, w: int, cs: float) -> None:
    """Size and PSNR of chunked vs single-pass outputs (normal source, both threads settings; sparse source)."""
    print()
    print("Quality (vs single-pass with the same threads; PSNR of each output against the source)")
    print(f"| {'source':30} | {'threads':8} | {'single size':>12} | {'chunked size':>12} | {'size Δ':>7} "
          f"| {'single PSNR':>11} | {'chunked PSNR':>12} | {'PSNR Δ':>7} |")  # fmt: skip
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 14}|{'-' * 14}|{'-' * 9}|{'-' * 13}|{'-' * 14}|{'-' * 9}|")
    pairs = []
    for label in ("threads 1", "default threads"):
        pairs.append((f"normal (keyframe every {cs:g} s)", label, results[(label, "single-pass")][2],
                      results[(label, f"chunked ({w} workers)")][2], normal))  # fmt: skip
    s_out, c_out = base / "sparse-single.mp4", base / "sparse-chunked.mp4"
    single_pass(sparse, s_out, preset, None)
    chunked(sparse, c_out, preset, None, w, cs)
    assert frame_count(c_out) == frame_count(s_out) == frame_count(sparse)
    pairs.append((f"sparse (keyframe every {cs * 1.3:g} s)", "default threads", s_out, c_out, sparse))
    for name, label, s, c, src in pairs:
        ss, cs_ = s.stat().st_size, c.stat().st_size
        ps, pc = psnr(s, src), psnr(c, src)
        print(f"| {name:30} | {label.split()[0]:8} | {ss:12d} | {cs_:12d} | {(cs_ / ss - 1) * 100:+6.2f}% "
              f"| {ps:11.3f} | {pc:12.3f} | {pc - ps:+7.3f} |", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--speed-only", action="store_true", help="skip the size/PSNR comparison")
    ap.add_argument("--keep", type=Path, default=None, help="keep sources and outputs in this directory")
    args = ap.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="mpr-bench-chunker-"))
    base.mkdir(parents=True, exist_ok=True)
    setup(base)
    from mpr.builtin_presets import STATIC_PRESETS
    from mpr.db import close_portal

    preset = next(p for p in STATIC_PRESETS if p.name == PRESET_NAME)
    load = os.getloadavg()[0]
    print(f"# preset {preset.name}: {preset.video_codec} {preset.speed_preset} crf {preset.crf}, "
          f"{preset.audio_codec} {preset.audio_bitrate}; {os.cpu_count()} cores; load {load:.2f}")  # fmt: skip
    # keyframes every chunk (10 s: x264's default keyint 250 at 25 fps) and, sparse, every 1.3 chunks
    normal = make_source(base / "normal.mp4", args.seconds, gop=round(args.chunk_seconds * 25))
    sparse = make_source(base / "sparse.mp4", args.seconds, gop=round(args.chunk_seconds * 1.3 * 25))
    src_frames = frame_count(normal)
    w, cs = args.workers, args.chunk_seconds

    runs = {}
    for label, threads in (("threads 1", 1), ("default threads", None)):
        runs[(label, "single-pass")] = lambda o, t=threads: single_pass(normal, o, preset, t)
        runs[(label, f"chunked ({w} workers)")] = lambda o, t=threads: chunked(normal, o, preset, t, w, cs)
        runs[(label, f"naive xargs -P {w}")] = lambda o, t=threads: naive(normal, o, preset, t, w, cs, base / "naive")
    # rounds interleave the variants so a change of load hits all of them alike; the fastest round counts
    results: dict[tuple[str, str], tuple[float, float, Path]] = {}
    for n in range(args.repeat):
        for (label, name), fn in runs.items():
            out = base / f"{name.split()[0]}-{label.split()[0]}.mp4"
            wall, cpu = timed(lambda fn=fn, out=out: fn(out), 1)
            if (label, name) not in results or wall < results[(label, name)][0]:
                results[(label, name)] = (wall, cpu, out)
            print(f"  round {n + 1}: {label:16} {name:22} {wall:7.1f} s wall {cpu:7.1f} s cpu  "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip

    print()
    print(f"Speed ({args.seconds:.0f} s 1280x720 source, {cs:.0f} s chunks, {w} workers; "
          f"speed-up = single-pass wall / wall)")  # fmt: skip
    print(
        f"| {'ffmpeg threads':16} | {'variant':22} | {'wall s':>7} | {'cpu s':>7} | {'speed-up':>8} | {'frames':>6} |"
    )
    print(f"|{'-' * 18}|{'-' * 24}|{'-' * 9}|{'-' * 9}|{'-' * 10}|{'-' * 8}|")
    for (label, name), (wall, cpu, out) in results.items():
        base_wall = results[(label, "single-pass")][0]
        print(
            f"| {label:16} | {name:22} | {wall:7.1f} | {cpu:7.1f} | {base_wall / wall:7.2f}x | {frame_count(out):6d} |"
        )
    print(f"(source: {src_frames} frames)")

    if not args.speed_only:
        quality(base, results, normal, sparse, preset, w, cs)
    close_portal()
    if args.keep is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
