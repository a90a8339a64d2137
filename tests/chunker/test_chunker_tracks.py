"""A chunked job keeps every audio track of the source: the audio is encoded once (all tracks) and muxed
beside the joined video chunks (subtitles: test_chunker_subtitles.py)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from mpr.chunker.pipeline import Pipeline
from mpr.probe import stream_list
from testkit import ffmpeg_bin


def _two_track_source(path: Path) -> Path:
    args = [
        ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=3",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=3",
        "-f", "lavfi", "-i", "sine=frequency=880:sample_rate=48000:duration=3",
        "-map", "0", "-map", "1", "-map", "2",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path),
    ]  # fmt: skip
    subprocess.run(args, check=True)
    return path


async def test_chunked_output_keeps_every_audio_track(preset, sqlite_db, new_job, tmp_path) -> None:
    source = _two_track_source(tmp_path / "two.mp4")
    out = tmp_path / "o.mp4"
    job_id = await new_job()
    await asyncio.to_thread(Pipeline(job_id, source, out, preset, chunk_seconds=1, workers=2).run)
    got = [(s["type"], s["codec"]) for s in stream_list(out) or []]
    assert got == [("video", "h264"), ("audio", "aac"), ("audio", "aac")]
    # both tracks last the whole clip
    durations = [s["duration"] for s in stream_list(out) or [] if s["type"] == "audio"]
    assert all(d and abs(d - 3.0) < 0.2 for d in durations), durations
