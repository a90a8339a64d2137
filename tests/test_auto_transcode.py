"""MPR_AUTO_PRESET: new media get one job with the preset, exactly once, through the normal service path.

Real ffmpeg clips, the real local executor (huey queue in the var dir, worker threads), SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mpr.errors import ConfigError
from mpr.models import AssetStatus, AutoStatus, JobStatus, MediaAsset, TranscodeJob
from mpr.probe import probe
from testkit import PG_DSN, _pg_admin, _reset_caches, free_port, make_clip, postgres_available, require, serving
from tests.core_helpers import put_media

pytestmark = pytest.mark.timeout(180)

VIDEO_PRESET = "h264-720p"  # mp4 + libx264: an .mkv source is not in its format, an .mp4 h264 one is


@pytest.fixture(scope="session")
def mkv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s h264/aac clip in Matroska: not in the video preset's container, so it is transcoded."""
    return make_clip(tmp_path_factory.mktemp("auto") / "clip.mkv", seconds=2.0)


@pytest.fixture
def auto(media, monkeypatch: pytest.MonkeyPatch):
    """``auto(PRESET, **env)`` turns automatic transcoding on for this test (own huey queue in the var dir)."""
    from mpr_local.queue import reset_queues

    monkeypatch.setenv("MPR_LOCAL_QUEUE", f"mprauto_{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("MPR_LOCAL_HEARTBEAT_INTERVAL", "0.2")

    def turn_on(preset: str | None = VIDEO_PRESET, **env: str) -> None:
        if preset is not None:
            monkeypatch.setenv("MPR_AUTO_PRESET", preset)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        _reset_caches()

    yield turn_on
    reset_queues()


@pytest.fixture
async def presets(db):
    from mpr.presets import sync_presets

    await sync_presets()
    return db


@pytest.fixture
async def worker(presets):
    """``await worker()`` starts a local worker in this process; it stops before the database closes."""
    from mpr_local.worker import WorkerHandle

    from mpr.settings import get_settings

    handles = []

    async def start():
        handles.append(WorkerHandle(get_settings()).start())
        return handles[-1]

    yield start
    for handle in handles:
        await asyncio.to_thread(handle.stop, 10)


async def wait_final(job_id, timeout: float = 90.0) -> TranscodeJob:
    deadline = time.monotonic() + timeout
    while True:
        job = await TranscodeJob.get(id=job_id)
        if job.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
            return job
        assert time.monotonic() < deadline, f"job still {job.status.value} at {job.progress:.0f}%"
        await asyncio.sleep(0.1)


async def jobs_by_asset() -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in await TranscodeJob.all().values_list("source_path", flat=True):
        counts[path] = counts.get(path, 0) + 1
    return counts


# --------------------------------------------------------------------------- scans


async def test_scan_queues_one_job_per_new_ready_asset_which_completes_and_never_again(
    auto, worker, media, clips, mkv
) -> None:
    from mpr.scan import scan

    put_media(media, clips["video"], "before.mp4")
    assert (await scan()).queued == 0  # off by default: registered, no job
    auto()
    put_media(media, mkv, "shows/one.mkv")
    put_media(media, mkv, "two.mkv")
    put_media(media, clips["truncated"], "broken.mp4")  # probes error: no job

    result = await scan()
    assert (result.registered, result.queued, result.auto_skipped) == (3, 2, 0), result
    assert await jobs_by_asset() == {"shows/one.mkv": 1, "two.mkv": 1}
    job = await TranscodeJob.get(source_path="shows/one.mkv").prefetch_related("preset")
    assert (job.preset.name, job.output_path, job.executor, job.chunked) == (
        VIDEO_PRESET,
        "shows/one_h264-720p.mp4",
        "local",
        False,
    )
    assert (await MediaAsset.get(path="shows/one.mkv")).auto is AutoStatus.QUEUED
    assert (await MediaAsset.get(path="before.mp4")).auto is None  # registered while off
    broken = await MediaAsset.get(path="broken.mp4")
    assert (broken.status, broken.auto) == (AssetStatus.ERROR, AutoStatus.PENDING)

    await worker()
    for job in await TranscodeJob.all():
        done = await wait_final(job.id)
        assert done.status is JobStatus.COMPLETED, done.error
        out = probe(media["out"] / done.output_path)
        assert (out.container, out.video_codec, out.audio_codec) == ("mp4", "h264", "aac")
        assert out.duration == pytest.approx(2.0, abs=0.1)

    again = await scan()  # a rescan creates nothing
    assert (again.registered, again.queued, again.auto_skipped) == (0, 0, 0)
    # a file that goes missing and comes back is restored, not queued again
    shutil.move(media["in"] / "two.mkv", media["var"] / "two.mkv")
    assert (await scan()).missing == 1
    shutil.move(media["var"] / "two.mkv", media["in"] / "two.mkv")
    back = await scan()
    assert (back.restored, back.queued) == (1, 0)
    # the broken file replaced by a good one: probed again, ready, and now it gets its one job
    put_media(media, mkv, "broken.mp4")
    fixed = await scan()
    assert (fixed.updated, fixed.queued) == (1, 1)
    assert await jobs_by_asset() == {"shows/one.mkv": 1, "two.mkv": 1, "broken.mp4": 1}
    assert (await scan()).queued == 0


async def test_chunked_auto_jobs(auto, presets, media, mkv) -> None:
    from mpr.scan import scan

    auto(MPR_AUTO_CHUNKED="1")
    put_media(media, mkv, "a.mkv")
    assert (await scan()).queued == 1
    job = await TranscodeJob.get(source_path="a.mkv")
    assert job.chunked and job.chunk_seconds and job.status is JobStatus.PENDING


async def test_files_already_in_the_preset_format_are_skipped_unless_told(auto, presets, media, clips, caplog) -> None:
    from mpr.scan import scan

    auto()
    put_media(media, clips["video"], "h264.mp4")  # mp4 + h264: what the preset makes
    with caplog.at_level(logging.INFO, logger="mpr.auto"):
        result = await scan()
    assert (result.registered, result.queued, result.auto_skipped) == (1, 0, 1)
    assert (await MediaAsset.get(path="h264.mp4")).auto is AutoStatus.SKIPPED
    assert await TranscodeJob.all().count() == 0
    line = next(r for r in caplog.records if "skipped h264.mp4" in r.getMessage())
    assert line.levelno == logging.INFO and "already mp4 with h264 video" in line.getMessage()
    assert (await scan()).auto_skipped == 0  # counted once

    auto("mp3-audio")  # audio-only preset: the same audio codec matches
    put_media(media, clips["audio"], "tone.mp3")
    assert ((r := await scan()).queued, r.auto_skipped) == (0, 1)

    auto(VIDEO_PRESET, MPR_AUTO_SKIP_MATCHING="0")
    put_media(media, clips["video"], "again.mp4")
    assert ((r := await scan()).queued, r.auto_skipped) == (1, 0)
    assert await jobs_by_asset() == {"again.mp4": 1}


async def test_audio_only_asset_and_video_preset_is_skipped_with_the_service_reason(
    auto, presets, media, clips, caplog
) -> None:
    from mpr.scan import scan

    auto()
    put_media(media, clips["audio"], "music/tone.mp3")
    with caplog.at_level(logging.INFO, logger="mpr.auto"):
        result = await scan()
    assert (result.registered, result.queued, result.auto_skipped, result.errors) == (1, 0, 1, [])
    assert (await MediaAsset.get(path="music/tone.mp3")).auto is AutoStatus.SKIPPED
    assert await TranscodeJob.all().count() == 0
    line = next(r for r in caplog.records if "skipped music/tone.mp3" in r.getMessage())
    assert line.levelno == logging.INFO
    assert "encodes video but tone.mp3 has no video stream" in line.getMessage()


async def test_a_source_gone_before_its_job_is_made_stays_pending_and_is_queued_when_back(
    auto, presets, media, mkv
) -> None:
    """A file removed between registering and queueing is not "not applicable": no permanent skip."""
    from mpr.auto import queue_pending
    from mpr.scan import register

    auto()
    put_media(media, mkv, "moving.mkv")
    asset, created = await register("moving.mkv", auto=True)
    assert created and asset.auto is AutoStatus.PENDING
    (media["in"] / "moving.mkv").unlink()  # e.g. being replaced: gone for a moment
    result = await queue_pending()
    assert (result.queued, result.skipped) == (0, 0), result
    assert (await MediaAsset.get(id=asset.id)).auto is AutoStatus.PENDING
    put_media(media, mkv, "moving.mkv")
    assert (await queue_pending()).queued == 1
    assert await jobs_by_asset() == {"moving.mkv": 1}


# --------------------------------------------------------------------------- exactly once


async def test_concurrent_scans_create_exactly_one_job_per_asset(auto, presets, media, mkv) -> None:
    from mpr.scan import scan

    auto()
    names = [f"c{i}.mkv" for i in range(4)]
    for name in names:
        put_media(media, mkv, name)
    results = await asyncio.gather(*(scan() for _ in range(4)))
    assert sum(r.registered for r in results) == 4
    assert sum(r.queued for r in results) == 4
    assert await jobs_by_asset() == dict.fromkeys(names, 1)


async def test_racing_claims_of_one_pending_asset_make_one_job(auto, presets, media, mkv) -> None:
    """Every claimer passes the pre-check at once; the conditional update in the job's transaction decides."""
    from mpr.auto import queue_pending
    from mpr.scan import register

    auto()
    for i in range(3):
        put_media(media, mkv, f"r{i}.mkv")
        asset, created = await register(f"r{i}.mkv", auto=True)
        assert created and asset.auto is AutoStatus.PENDING
    results = await asyncio.gather(*(queue_pending() for _ in range(6)))
    assert sum(r.queued for r in results) == 3 and not any(r.errors for r in results)
    assert await jobs_by_asset() == {"r0.mkv": 1, "r1.mkv": 1, "r2.mkv": 1}
    # registering again (an upload or a scan that lost the race) does not mark it again
    again, created = await register("r0.mkv", auto=True)
    assert not created and again.auto is AutoStatus.QUEUED


def _mpr(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mpr.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_mpr_scan_processes_at_once_create_one_job_per_asset(kind, auto, media, mkv) -> None:
    """Two processes (two API processes, or mpr scan next to the watch folder) on one database."""
    import asyncio as aio

    env = {**os.environ, "MPR_AUTO_PRESET": VIDEO_PRESET, "MPR_LOG_LEVEL": "WARNING"}
    dbname = None
    if kind == "postgres":
        require("PostgreSQL", postgres_available(), "127.0.0.1:5432")
        dbname = f"mpr_t_{uuid.uuid4().hex[:12]}"
        aio.run(_pg_admin(f'CREATE DATABASE "{dbname}"'))
        env["MPR_DATABASE_URL"] = PG_DSN.rsplit("/", 1)[0] + "/" + dbname
    try:
        migrate = _mpr(["migrate"], env)
        assert migrate.wait(120) == 0, migrate.communicate()[1]
        names = [f"p{i}.mkv" for i in range(5)]
        for name in names:
            put_media(media, mkv, name)
        procs = [_mpr(["scan"], env) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        queued = [int(out.split("queued ")[1].split(",")[0].split()[0]) for out, _ in outs]
        assert sum(queued) == 5, outs
        assert _count_jobs(env) == dict.fromkeys(names, 1)
        rescan = _mpr(["scan"], env)
        out, err = rescan.communicate(timeout=120)
        assert rescan.returncode == 0 and "registered 0" in out and "queued 0" in out, (out, err)
    finally:
        if dbname:
            aio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))


def _count_jobs(env: dict[str, str]) -> dict[str, int]:
    code = (
        "import asyncio, collections, json\n"
        "from mpr.db import init_db, close_db\n"
        "from mpr.models import TranscodeJob\n"
        "async def main():\n"
        "    await init_db()\n"
        "    try:\n"
        "        paths = await TranscodeJob.all().values_list('source_path', flat=True)\n"
        "    finally:\n"
        "        await close_db()\n"
        "    print(json.dumps(collections.Counter(paths)))\n"
        "asyncio.run(main())\n"
    )
    import json

    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# --------------------------------------------------------------------------- uploads and the API


@pytest.fixture
async def start_api(presets, media, monkeypatch):
    async for start in serving(monkeypatch):
        yield start


async def test_upload_queues_one_job_and_graphql_reports_queued(auto, start_api, media, mkv, clips) -> None:
    auto()
    api = await start_api()
    r = await api.http.post("/api/upload", params={"filename": "up.mkv"}, content=mkv.read_bytes())
    assert r.status_code == 201, r.text
    assert await jobs_by_asset() == {"up.mkv": 1}
    assert (await MediaAsset.get(path="up.mkv")).auto is AutoStatus.QUEUED
    # the seed document is unchanged; a rescan of the uploaded file queues nothing more
    seed = await api.ok("mutation { scanMediaFolder { found registered skipped } }")
    assert seed["scanMediaFolder"] == {"found": 1, "registered": 0, "skipped": 1}
    put_media(media, mkv, "dropped.mkv")
    put_media(media, clips["audio"], "tone.mp3")
    data = await api.ok("mutation { scanMediaFolder { found registered skipped queued autoSkipped errors } }")
    assert data["scanMediaFolder"] == {
        "found": 3,
        "registered": 2,
        "skipped": 1,
        "queued": 1,
        "autoSkipped": 1,
        "errors": [],
    }
    assert await jobs_by_asset() == {"up.mkv": 1, "dropped.mkv": 1}


# --------------------------------------------------------------------------- outputs inside MEDIA_IN


@pytest.mark.parametrize("layout", ["out-inside-in", "same-folder"])
async def test_outputs_in_media_in_are_never_registered_so_no_loop(layout, auto, worker, media, mkv, monkeypatch):
    from mpr.scan import scan

    out = media["in"] / "out" if layout == "out-inside-in" else media["in"]
    out.mkdir(exist_ok=True)
    monkeypatch.setenv("MEDIA_OUT", str(out))
    auto()
    put_media(media, mkv, "a.mkv")
    assert (await scan()).queued == 1
    await worker()
    job = await wait_final((await TranscodeJob.get(source_path="a.mkv")).id)
    assert job.status is JobStatus.COMPLETED, job.error
    assert (out / job.output_path).is_file()
    for _ in range(2):  # the output is listed in MEDIA_IN now: not a source, no job of a job
        result = await scan()
        assert (result.found, result.registered, result.queued) == (1, 0, 0), result
    assert await MediaAsset.all().values_list("path", flat=True) == ["a.mkv"]
    assert await TranscodeJob.all().count() == 1
    if layout == "same-folder":  # a failed job's reserved name holds no output: a file put there is a source
        failed = await TranscodeJob.create(
            source_path="a.mkv", output_path="hand.mkv", executor="local", preset_snapshot={}, status=JobStatus.FAILED
        )
        put_media(media, mkv, "hand.mkv")
        assert (await scan()).registered == 1
        await failed.delete()


# --------------------------------------------------------------------------- configuration


async def test_bad_preset_or_chunked_audio_preset_is_a_config_error(auto, presets) -> None:
    from mpr.auto import check_settings

    auto(None)
    assert await check_settings() is None  # off: nothing to check
    auto("no-such-preset")
    with pytest.raises(ConfigError, match=r"MPR_AUTO_PRESET='no-such-preset' is not a preset name or id .*h264-720p"):
        await check_settings()
    auto("aac-audio", MPR_AUTO_CHUNKED="1")
    with pytest.raises(ConfigError, match="MPR_AUTO_CHUNKED=1 needs a preset that encodes video"):
        await check_settings()
    auto(VIDEO_PRESET, MPR_AUTO_CHUNKED="0")
    assert (await check_settings()).name == VIDEO_PRESET


def test_settings_parse_the_auto_variables() -> None:
    from mpr.settings import Settings

    default = Settings.from_env({})
    assert (default.auto_preset, default.auto_skip_matching, default.auto_chunked) == (None, True, False)
    on = Settings.from_env({"MPR_AUTO_PRESET": " vp9-webm ", "MPR_AUTO_SKIP_MATCHING": "0", "MPR_AUTO_CHUNKED": "yes"})
    assert (on.auto_preset, on.auto_skip_matching, on.auto_chunked) == ("vp9-webm", False, True)
    with pytest.raises(ConfigError, match="MPR_AUTO_CHUNKED must be 1 or 0"):
        Settings.from_env({"MPR_AUTO_CHUNKED": "maybe"})


def test_mpr_scan_and_mpr_serve_refuse_an_unknown_preset_at_start_up(auto, media, mkv) -> None:
    env = {**os.environ, "MPR_AUTO_PRESET": "h264-7200p", "MPR_PORT": str(free_port()), "MPR_GRPC_PORT": "0"}
    put_media(media, mkv, "a.mkv")
    for args in (["scan"], ["serve", "--no-worker"]):
        done = subprocess.run([sys.executable, "-m", "mpr.cli", *args], env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "Error: MPR_AUTO_PRESET='h264-7200p' is not a preset name or id" in done.stderr, done.stderr
    # nothing was registered by the refused scan
    ok = subprocess.run([sys.executable, "-m", "mpr.cli", "scan"], env={**env, "MPR_AUTO_PRESET": VIDEO_PRESET},
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0 and "registered 1" in ok.stdout and "queued 1" in ok.stdout, (ok.stdout, ok.stderr)
