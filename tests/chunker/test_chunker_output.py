"""The chunked output is frame-exact: same frames, timestamps, duration and audio as the source."""

from __future__ import annotations

import asyncio

import pytest

from mpr.chunker import concat, encode_audio, encode_chunk, plan_chunks
from mpr.models import ChunkStatus, JobChunk
from tests.chunker.chunkcheck import assert_same_frames, chunked, inspect, single_pass


def assert_av(out, src, frame: float) -> None:
    assert abs(out.duration - src.duration) <= frame + 1e-6, (out.duration, src.duration)
    assert src.audio_seconds is not None and out.audio_seconds is not None
    # AAC re-encoding may add at most one 1024-sample frame of padding
    assert abs(out.audio_seconds - src.audio_seconds) <= 1024 / 48000 + 1e-6
    assert abs(out.audio_start - out.video_start) <= 0.001 + abs(src.audio_start - src.video_start)


@pytest.mark.parametrize("kind", ["normal", "sparse", "short"])
async def test_chunked_output_matches_source_and_single_pass(kind, sources, preset, sqlite_db, new_job, tmp_path):
    source = sources[kind]
    job_id = await new_job()
    out = await chunked(job_id, source, tmp_path / "chunked.mp4", preset)
    single = await asyncio.to_thread(single_pass, source, tmp_path / "single.mp4", preset)

    src, got, ref = inspect(source), inspect(out), inspect(single)
    assert_same_frames(got, src)
    assert len(got.pts) == len(ref.pts)
    assert_av(got, src, frame=1 / 25)
    assert abs(got.audio_seconds - ref.audio_seconds) < 1e-6

    rows = await JobChunk.filter(job_id=job_id).order_by("index")
    assert len(rows) == len(plan_chunks(source, 1.0)) >= 1
    assert all(r.status == ChunkStatus.DONE and r.attempts == 1 and r.worker and r.output_key for r in rows)
    assert all(r.started_at and r.finished_at and r.finished_at >= r.started_at for r in rows)


async def test_variable_frame_rate_keeps_every_timestamp(sources, preset, sqlite_db, new_job, tmp_path):
    source = sources["vfr"]
    job_id = await new_job()
    out = await chunked(job_id, source, tmp_path / "vfr.mp4", preset)
    src, got = inspect(source), inspect(out)
    gaps = {round(b - a, 3) for a, b in zip(src.pts, src.pts[1:], strict=False)}
    assert gaps == {0.04, 0.08}  # really variable
    assert_same_frames(got, src)
    assert_av(got, src, frame=0.08)
    # the single-pass encode keeps the variable rate too (no duplicated frames)
    single = await asyncio.to_thread(single_pass, source, tmp_path / "single.mp4", preset)
    ref = inspect(single)
    assert len(ref.pts) == len(src.pts) == len(got.pts)


async def test_video_starting_after_the_audio_stays_in_sync(sources, preset, sqlite_db, new_job, tmp_path):
    source = sources["late_video"]
    job_id = await new_job()
    out = await chunked(job_id, source, tmp_path / "late.mp4", preset)
    src, got = inspect(source), inspect(out)
    assert abs(src.video_start - 0.2) < 1e-3 and abs(src.audio_start) < 1e-3
    assert_same_frames(got, src)
    assert abs(got.video_start - 0.2) < 1e-3 and abs(got.audio_start) < 1e-3
    assert abs(got.audio_seconds - src.audio_seconds) <= 1024 / 48000 + 1e-6
    single = await asyncio.to_thread(single_pass, source, tmp_path / "single.mp4", preset)
    assert len(inspect(single).pts) == len(src.pts) == len(got.pts)


async def test_audio_only_source_is_encoded_in_one_pass(sources, preset, sqlite_db, new_job, tmp_path):
    job_id = await new_job()
    out = await chunked(job_id, sources["audio"], tmp_path / "tone.mp4", preset)
    got, src = inspect(out), inspect(sources["audio"])
    assert got.pts == []
    assert abs(got.audio_seconds - src.audio_seconds) <= 1024 / 48000 + 1e-6
    assert await JobChunk.filter(job_id=job_id).count() == 0


def test_public_functions_make_the_same_file_without_a_database(sources, preset, tmp_path):
    # what a cloud executor does on its workers: plan, encode chunks anywhere, concat
    source = sources["sparse"]
    plan = plan_chunks(source, 1.0)
    parts = [encode_chunk(source, c, preset, tmp_path / f"part{c.index}.mp4") for c in reversed(plan)][::-1]
    audio = encode_audio(source, preset, tmp_path / "audio.mp4")
    out = concat(parts, audio, tmp_path / "joined.mp4", preset, durations=[c.duration for c in plan])
    src, got = inspect(source), inspect(out)
    assert_same_frames(got, src)
    assert_av(got, src, frame=1 / 25)
    assert not list(tmp_path.glob(".*partial*"))
