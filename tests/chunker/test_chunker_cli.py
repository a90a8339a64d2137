"""`mpr transcode --chunked` runs the pipeline in the foreground and shows per-chunk progress."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mpr import events
from mpr.chunker.display import ChunkProgress
from tests.chunker.chunkcheck import assert_same_frames, inspect

MPR = Path(sys.executable).parent / "mpr"  # the venv's console script


def test_chunk_display_summarises_chunk_events():
    view = ChunkProgress.attach("job-1")
    try:
        for i in range(3):
            view(events.JobEvent(job_id="job-1", type=events.CHUNK_QUEUED, chunk_index=i))
        view(events.JobEvent(job_id="job-1", type=events.CHUNK_STARTED, chunk_index=0, worker="w0"))
        view(events.JobEvent(job_id="job-1", type=events.CHUNK_PROGRESS, chunk_index=0, worker="w0", progress=45))
        view(events.JobEvent(job_id="job-1", type=events.CHUNK_DONE, chunk_index=1, progress=100))
        view(events.JobEvent(job_id="job-1", type=events.CHUNK_FAILED, chunk_index=2, message="x (retrying)"))
        view(events.JobEvent(job_id="other", type=events.CHUNK_DONE, chunk_index=7))
        assert view.summary() == "chunks 1/3 done · #0 45% · 1 retrying"
    finally:
        view.close()


def test_transcode_chunked_cli_shows_chunks_and_writes_exact_output(media, sources):
    shutil.copy(sources["normal"], media["in"] / "clip.mp4")
    env = {**os.environ, "COLUMNS": "200"}
    mpr = [str(MPR)]
    subprocess.run([*mpr, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    done = subprocess.run(
        [*mpr, "transcode", "clip.mp4", "--preset", "h264-720p", "--chunked", "--chunk-seconds", "1", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "chunks 4/4 done" in done.stderr
    out = Path(done.stdout.strip().splitlines()[-1])
    assert out.parent == media["out"] and out.is_file()
    assert_same_frames(inspect(out), inspect(sources["normal"]))
    assert not (media["var"] / "chunks").exists() or not any((media["var"] / "chunks").iterdir())
