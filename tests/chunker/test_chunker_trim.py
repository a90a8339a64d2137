"""Trimmed chunked jobs: the same frames, pictures, timestamps and audio as the trimmed single pass."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import av
import pytest

from mpr import events, ffmpeg, jobs, service
from mpr.builtin_presets import STATIC_PRESETS
from mpr.chunker import concat, encode_audio, encode_chunk, placement, plan_chunks
from mpr.chunker.pipeline import Pipeline, work_dir_for
from mpr.errors import FFmpegError, MprError, ValidationError
from mpr.execute import run_job
from mpr.models import ChunkStatus, JobChunk, JobStatus, TranscodeJob, TranscodePreset
from mpr.plugins import register_plugin, unregister_plugin
from mpr.presets import preset_from_model
from mpr.probe import probe
from tests.chunker.chunkcheck import (
    AAC_FRAME,
    assert_like_single_pass,
    assert_same_frames,
    chunked,
    inspect,
    single_pass,
)
from tests.core_helpers import FakeExecutorPlugin, ready_asset, synced


def stream_starts(path: Path) -> tuple[float, float]:
    """(video, audio) start times of ``path`` in seconds, as stored (no origin subtracted)."""
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        return float(v.start_time * v.time_base), float(a.start_time * a.time_base)


TRIMS = [
    # (source, start, end, chunks): keyframes every 1 s in "normal", at 0 / 2.4 / 4.8 s in "sparse"
    ("normal", 1.0, 3.0, 2),  # starts on a keyframe
    ("normal", 0.53, 3.47, 3),  # starts and ends between keyframes (and between frames)
    ("normal", 1.01, 3.49, 2),  # 0.01 s after a frame: the encoder's rounding of the times must match
    ("normal", 1.3, 1.9, 1),  # shorter than one chunk
    ("normal", 0.7, None, 3),  # to the end of the source
    ("normal", 1.5, 4.0, 2),  # an end exactly at the source's end
    ("normal", None, 2.5, 3),  # only an end
    ("sparse", 0.5, 4.5, 2),  # sparse keyframes: the cut is the keyframe at 2.4 s
    ("vfr", 0.7, 3.3, None),  # variable frame rate (as many chunks as the plan has: checked >= 2)
]


@pytest.mark.parametrize(("kind", "start", "end", "chunks"), TRIMS)
async def test_trimmed_chunked_output_matches_the_trimmed_single_pass(
    kind, start, end, chunks, sources, preset, sqlite_db, new_job, tmp_path
):
    source = sources[kind]
    job_id = await new_job(trim_start=start, trim_end=end)
    out = await chunked(job_id, source, tmp_path / "chunked.mp4", preset, start=start, end=end)
    ref_path = await asyncio.to_thread(single_pass, source, tmp_path / "single.mp4", preset, start, end)
    src, got, ref = inspect(source), inspect(out), inspect(ref_path)
    assert len(got.pts) == len(ref.pts) > 0
    assert_like_single_pass(got, ref, src, start, frame=0.08 if kind == "vfr" else 1 / 25)

    rows = await JobChunk.filter(job_id=job_id).order_by("index")
    assert len(rows) == (chunks or len(plan_chunks(source, 1.0, start=start, end=end))) >= 1
    assert chunks or len(rows) >= 2
    assert all(r.status == ChunkStatus.DONE and r.attempts == 1 and r.output_key for r in rows)
    # rows are in source time: the first starts at the trim start, the last ends at the trim end
    assert rows[0].start == pytest.approx(start or 0.0, abs=1e-6)
    assert rows[-1].end == pytest.approx(end if end is not None else 4.0, abs=0.05)
    assert all(a.end == b.start for a, b in zip(rows, rows[1:], strict=False))
    assert not work_dir_for(job_id).exists()


def test_plan_of_a_trim_starts_at_the_trim_and_counts_its_frames(sources):
    plan = plan_chunks(sources["normal"], 1.0, start=0.53, end=3.47)
    assert [(c.start, c.end) for c in plan] == [(0.53, 2.0), (2.0, 3.0), (3.0, 3.47)]
    # frames at 0.56 .. 1.96, 2.00 .. 2.96, 3.00 .. 3.44 (25 fps)
    assert [c.frames for c in plan] == [36, 25, 12]
    # a tail shorter than a quarter chunk joins the chunk before
    assert [(c.start, c.end) for c in plan_chunks(sources["normal"], 1.0, start=0.5, end=3.2)] == [
        (0.5, 2.0),
        (2.0, 3.2),
    ]
    assert plan_chunks(sources["audio"], 1.0, start=0.5, end=1.0) == []


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [(2.0, 2.0, "must be after"), (3.0, 1.0, "must be after"), (9.0, None, "holds no video frame")],
)
def test_plan_of_an_impossible_trim_is_refused(start, end, message, sources):
    with pytest.raises(ValueError, match=message):
        plan_chunks(sources["normal"], 1.0, start=start, end=end)


async def test_trim_without_video_frames_fails_before_any_chunk(sources, preset, sqlite_db, new_job, tmp_path):
    # the picture of "late_video" starts at 0.2 s: a trim of its first 0.15 s has sound only
    job_id = await new_job(trim_end=0.15)
    with pytest.raises(MprError, match="holds no video frame"):
        await chunked(job_id, sources["late_video"], tmp_path / "o.mp4", preset, start=None, end=0.15)
    assert await JobChunk.filter(job_id=job_id).count() == 0
    assert not (tmp_path / "o.mp4").exists()


async def test_trimmed_late_video_keeps_its_offset_to_the_audio(sources, preset, sqlite_db, new_job, tmp_path):
    source = sources["late_video"]
    job_id = await new_job(trim_start=0.1, trim_end=2.5)
    out = await chunked(job_id, source, tmp_path / "late.mp4", preset, start=0.1, end=2.5)
    ref_path = await asyncio.to_thread(single_pass, source, tmp_path / "single.mp4", preset, 0.1, 2.5)
    # the picture starts 0.2 s into the source, so 0.1 s into the trim: 0.12 s on the encoder's 1/25 s grid,
    # in both files; the single pass (ffmpeg 5.1) starts its sound 0.07 s late, the chunked job at the trim start
    assert stream_starts(out) == pytest.approx((0.12, 0.0), abs=1e-3)
    assert stream_starts(ref_path) == pytest.approx((0.12, 0.07), abs=1e-3)
    got, ref = inspect(out), inspect(ref_path)
    # inspect() counts from each file's first packet: line the single pass up on the same origin
    ref = dataclasses.replace(ref, pts=[p - ref.pts[0] + got.pts[0] for p in ref.pts], audio_start=0.0)
    ref.video_start = ref.pts[0]
    assert_like_single_pass(got, ref, inspect(source), 0.1, frame=1 / 25)


async def test_audio_only_source_is_trimmed_in_one_pass(sources, preset, sqlite_db, new_job, tmp_path):
    job_id = await new_job(trim_start=0.5, trim_end=1.5)
    out = await chunked(job_id, sources["audio"], tmp_path / "tone.mp4", preset, start=0.5, end=1.5)
    ref = inspect(await asyncio.to_thread(single_pass, sources["audio"], tmp_path / "single.mp4", preset, 0.5, 1.5))
    got = inspect(out)
    assert got.pts == [] and ref.pts == []
    assert abs(got.audio_seconds - 1.0) <= AAC_FRAME + 1e-6
    assert abs(got.audio_seconds - ref.audio_seconds) < 1e-6
    assert await JobChunk.filter(job_id=job_id).count() == 0


async def test_trim_with_a_frame_rate_change_is_encoded_in_one_pass(
    sources, preset, sqlite_db, new_job, sink, tmp_path
):
    # the fps filter would place frames differently at a cut off its output grid: no chunks for such a trim
    fps15 = dataclasses.replace(preset, fps=15)
    job_id = await new_job(trim_start=0.53, trim_end=3.47)
    out = await chunked(job_id, sources["normal"], tmp_path / "o.mp4", fps15, start=0.53, end=3.47)
    ref = inspect(await asyncio.to_thread(single_pass, sources["normal"], tmp_path / "s.mp4", fps15, 0.53, 3.47))
    got = inspect(out)
    assert len(got.pts) == len(ref.pts) == 44  # 2.94 s at 15 fps
    assert_same_frames(got, ref)
    assert await JobChunk.filter(job_id=job_id).count() == 0
    notes = [e.message for e in sink.of(job_id) if e.type == "log"]
    assert any("encoding in one pass" in m and "changes the frame rate" in m for m in notes), notes
    plan = plan_chunks(sources["normal"], 1.0, start=0.53, end=3.47)
    with pytest.raises(FFmpegError, match="changes the frame rate"):
        encode_chunk(sources["normal"], plan[1], fps15, tmp_path / "c.mp4", trim_start=0.53, trim_end=3.47)


class FailingPipeline(Pipeline):
    """Makes a real ffmpeg fail (missing input) for the chunks in ``fail``; records which chunks it encodes."""

    def __init__(self, *args, fail: frozenset[int] = frozenset(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fail = fail
        self.calls: list[int] = []
        self._calls_lock = threading.Lock()

    def encode(self, chunk, out_path, on_progress):
        with self._calls_lock:
            self.calls.append(chunk.index)
        if chunk.index in self.fail:
            ffmpeg.run([ffmpeg.ffmpeg_binary(), "-nostdin", "-i", f"file:{out_path}.missing", "-f", "null", "-"])
        super().encode(chunk, out_path, on_progress)


async def test_retry_of_a_trimmed_job_reencodes_only_unfinished_chunks(sources, preset, db, new_job, sink, tmp_path):
    source, start, end = sources["normal"], 0.53, 3.47
    job_id = await new_job(trim_start=start, trim_end=end)
    out = tmp_path / "o.mp4"
    first = FailingPipeline(
        job_id, source, out, preset, chunk_seconds=1, workers=2, trim_start=start, trim_end=end, fail=frozenset({1})
    )
    with pytest.raises(FFmpegError, match="chunk 1 failed after 3 attempts"):
        await asyncio.to_thread(first.run)
    rows = {r.index: r for r in await JobChunk.filter(job_id=job_id)}
    assert rows[1].status == ChunkStatus.FAILED and rows[0].status == rows[2].status == ChunkStatus.DONE
    assert (rows[0].start, rows[2].end) == (start, end)

    await jobs.transition(job_id, JobStatus.FAILED, error="chunk 1 failed")
    await jobs.transition(job_id, JobStatus.PENDING)
    await jobs.transition(job_id, JobStatus.PROCESSING)
    second = FailingPipeline(job_id, source, out, preset, chunk_seconds=1, workers=2, trim_start=start, trim_end=end)
    await asyncio.to_thread(second.run)
    assert second.calls == [1]
    reused = [e.chunk_index for e in sink.of(job_id) if e.type == events.CHUNK_DONE and "reused" in e.message]
    assert reused == [0, 2]
    queued = [e.message for e in sink.of(job_id) if e.type == events.CHUNK_QUEUED]
    assert queued[0] == "0.530-2.000s"  # chunk events name source times
    ref = inspect(await asyncio.to_thread(single_pass, source, tmp_path / "single.mp4", preset, start, end))
    assert_like_single_pass(inspect(out), ref, inspect(source), start, frame=1 / 25)


def test_public_functions_trim_without_a_database(sources, preset, tmp_path):
    # what a cloud worker would do: plan the trim, encode the chunks anywhere, place and join them
    source, start, end = sources["vfr"], 0.7, 3.3
    plan = plan_chunks(source, 1.0, start=start, end=end)
    parts = [
        encode_chunk(source, c, preset, tmp_path / f"part{c.index}.mp4", trim_start=start, trim_end=end)
        for c in reversed(plan)
    ][::-1]
    audio = encode_audio(source, preset, tmp_path / "audio.mp4", start=start, end=end)
    durations, video_start = placement(parts)
    out = concat(parts, audio, tmp_path / "joined.mp4", preset, durations=durations, video_start=video_start)
    ref = inspect(single_pass(source, tmp_path / "single.mp4", preset, start, end))
    assert_like_single_pass(inspect(out), ref, inspect(source), start, frame=0.08)


def test_placement_refuses_chunks_out_of_order(sources, preset, tmp_path):
    plan = plan_chunks(sources["normal"], 1.0, start=0.5, end=3.0)
    parts = [encode_chunk(sources["normal"], c, preset, tmp_path / f"p{c.index}.mp4", trim_start=0.5, trim_end=3.0)
             for c in plan]  # fmt: skip
    with pytest.raises(FFmpegError, match="do not follow each other"):
        placement(parts[::-1])
    with pytest.raises(FFmpegError, match="no chunks"):
        placement([])
    with pytest.raises(FFmpegError, match="cannot read"):
        placement([tmp_path / "missing.mp4"])


# ---- through the service and run_job, as createJob(input: {..., trimStart, trimEnd, chunked: true}) does ----


async def test_created_trimmed_chunked_job_runs_like_the_single_pass(db, media, sources, preset) -> None:
    await synced()
    asset = await ready_asset(media, sources["normal"], "clip.mp4")
    pid = (await TranscodePreset.get(name="h264-720p")).id
    job = await service.create_job(
        asset.id, pid, trim_start=0.53, trim_end=3.47, chunked=True, chunk_seconds=1,
        chunk_workers=2, executor="inline", submit=False,
    )  # fmt: skip
    assert (job.trim_start, job.trim_end, job.chunked) == (0.53, 3.47, True)
    await asyncio.to_thread(run_job, job.id)
    done = await TranscodeJob.get(id=job.id)
    assert done.status is JobStatus.COMPLETED, done.error
    rows = await JobChunk.filter(job_id=job.id).order_by("index")
    assert [(r.start, r.end) for r in rows] == [(0.53, 2.0), (2.0, 3.0), (3.0, 3.47)]
    out = media["out"] / done.output_path
    recipe = preset_from_model(await TranscodePreset.get(id=pid))
    ref = inspect(await asyncio.to_thread(single_pass, sources["normal"], media["out"] / "ref.mp4", recipe, 0.53, 3.47))
    assert_like_single_pass(inspect(out), ref, inspect(sources["normal"]), 0.53, frame=1 / 25)
    assert done.output_duration == pytest.approx(probe(media["out"] / "ref.mp4").duration, abs=1e-3)


@pytest.fixture
def fake(media, monkeypatch):
    plugin = FakeExecutorPlugin()
    register_plugin(plugin, name="mpr-fake-trim")
    try:
        yield plugin
    finally:
        unregister_plugin(plugin)


async def test_bad_trimmed_chunked_jobs_are_refused_and_nothing_is_created(db, media, sources, fake) -> None:
    await synced()
    video = await ready_asset(media, sources["normal"], "clip.mp4")
    audio = await ready_asset(media, sources["audio"], "tone.m4a")
    pid = (await TranscodePreset.get(name="h264-720p")).id
    copy = (await TranscodePreset.get(name="copy")).id
    chunked = dict(chunked=True, executor="inline", submit=False)
    cases = [
        (dict(source_asset_id=video.id, preset_id=pid, trim_start=2, trim_end=2, **chunked), "must be after"),
        (dict(source_asset_id=video.id, preset_id=pid, trim_start=3, trim_end=1, **chunked), "must be after"),
        (dict(source_asset_id=video.id, preset_id=pid, trim_start=9, **chunked), "past the end"),
        (dict(source_asset_id=video.id, preset_id=pid, trim_start=1, trim_end=60, **chunked), "past the end"),
        (dict(source_asset_id=video.id, preset_id=pid, trim_start=-1, **chunked), ">= 0"),
        # stream copy is never chunked, trimmed or not
        (dict(source_asset_id=video.id, preset_id=copy, trim_start=1, trim_end=2, **chunked), "encodes video"),
        (dict(source_asset_id=audio.id, preset_id=None, trim_start=0.5, **chunked), "video source"),
        # an executor without chunked_trim (local, lambda and gcp have it) says so instead of running it otherwise
        (
            dict(source_asset_id=video.id, preset_id=pid, trim_start=1, trim_end=2, chunked=True, executor="fake"),
            "fake executor cannot run a trimmed chunked job",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValidationError, match=message):
            await service.create_job(**kwargs)
    assert await TranscodeJob.all().count() == 0
    assert await JobChunk.all().count() == 0
    assert fake.submitted == []
    # the same executor still takes the trim without chunking, and the chunked job without a trim
    await service.create_job(video.id, pid, trim_start=1, trim_end=2, executor="fake")
    await service.create_job(video.id, pid, chunked=True, executor="fake")
    assert len(fake.submitted) == 2
    # the local executor runs trimmed chunked jobs (its class says so)
    job = await service.create_job(
        video.id, pid, trim_start=1, trim_end=2, chunked=True, executor="local", submit=False
    )
    assert (job.executor, job.trim_start, job.trim_end, job.chunked) == ("local", 1.0, 2.0, True)


def test_transcode_cli_with_start_end_and_chunked(media, sources, tmp_path):
    shutil.copy(sources["normal"], media["in"] / "clip.mp4")
    mpr = str(Path(sys.executable).parent / "mpr")
    env = {**os.environ, "COLUMNS": "200"}
    subprocess.run([mpr, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    argv = [mpr, "transcode", "clip.mp4", "--preset", "h264-720p", "--start", "0.53", "--end", "3.47"]
    argv += ["--chunked", "--chunk-seconds", "1", "--workers", "2"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "chunks 3/3 done" in done.stderr
    out = Path(done.stdout.strip().splitlines()[-1])
    assert out.parent == media["out"] and out.is_file()
    recipe = next(p for p in STATIC_PRESETS if p.name == "h264-720p")
    ref = inspect(single_pass(sources["normal"], tmp_path / "ref.mp4", recipe, 0.53, 3.47))
    assert_like_single_pass(inspect(out), ref, inspect(sources["normal"]), 0.53, frame=1 / 25)
