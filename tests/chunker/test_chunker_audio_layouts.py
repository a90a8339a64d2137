"""A chunked job's one audio encode converts the tracks libopus cannot take as they are, as a single pass does."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from mpr.chunker.pipeline import Pipeline
from mpr.presets import Preset
from mpr.probe import stream_list
from testkit import ffmpeg_bin

WEBM = Preset(
    name="webm-opus", container="webm", video_codec="libvpx-vp9", speed_preset="8", crf=40, audio_codec="libopus"
)


def _source(path: Path) -> Path:
    # stereo, 4 channels without a layout (ffmpeg: 4.0) and ac3 5.1(side): the last two broke libopus
    args = [ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y"]
    args += ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=3"]
    for layout in ("stereo", "4.0", "5.1(side)"):
        args += ["-f", "lavfi", "-i", f"sine=sample_rate=48000:duration=3,aformat=channel_layouts={layout}"]
    args += ["-map", "0", "-map", "1", "-map", "2", "-map", "3", "-c:v", "libx264", "-preset", "ultrafast"]
    args += ["-g", "25", "-pix_fmt", "yuv420p", "-c:a:0", "pcm_s16le", "-c:a:1", "pcm_s16le", "-c:a:2", "ac3"]
    subprocess.run([*args, str(path)], check=True)
    return path


async def test_chunked_webm_keeps_every_track_with_its_channel_count(sqlite_db, new_job, tmp_path) -> None:
    source = _source(tmp_path / "layouts.mkv")
    out = tmp_path / "o.webm"
    job_id = await new_job()
    await asyncio.to_thread(Pipeline(job_id, source, out, WEBM, chunk_seconds=1, workers=2).run)
    audio = [s for s in stream_list(out) or [] if s["type"] == "audio"]
    assert [(s["codec"], s["channels"]) for s in audio] == [("opus", 2), ("opus", 4), ("opus", 6)]
