"""ffmpeg does not outlive a SIGKILLed worker: the kernel's parent-death signal, and the reaper's sweep."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from mpr import ffmpeg, service
from mpr.models import JobStatus, TranscodeJob
from testkit import _reset_caches, make_clip, realtime_ffmpeg

pytestmark = pytest.mark.timeout(180)

MPR = str(Path(sys.executable).parent / "mpr")


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 s of 640x480 with 1 s keyframes: encoding it to 720p runs for many seconds, also in chunks."""
    return make_clip(tmp_path_factory.mktemp("orphans") / "long.mp4", seconds=30.0, size="640x480", gop=25)


@pytest.fixture
async def queued(sqlite_db, media, monkeypatch: pytest.MonkeyPatch, long_clip: Path):
    """A unique local queue, the presets, and the long clip registered as an asset.

    The workers encode at native speed (MPR_FFMPEG in their environment): the 30 s clip is
    still encoding when a test kills its worker, however fast the machine.
    """
    from mpr_local.queue import get_queue, reset_queues

    from mpr import scan
    from mpr.presets import sync_presets
    from mpr.settings import get_settings

    monkeypatch.setenv("MPR_LOCAL_QUEUE", f"mprt_{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("MPR_HEARTBEAT_TIMEOUT", "3")
    monkeypatch.setenv("MPR_LOCAL_REAPER_INTERVAL", "0.5")
    monkeypatch.setenv("MPR_FFMPEG", str(realtime_ffmpeg(media["var"] / "ffmpeg-realtime")))
    _reset_caches()
    reset_queues()
    await sync_presets()
    shutil.copyfile(long_clip, media["in"] / "long.mp4")
    asset, _ = await scan.register("long.mp4")
    try:
        yield asset
    finally:
        get_queue(get_settings()).huey.flush()
        reset_queues()


class Worker:
    """An ``mpr worker`` subprocess (one job at a time) logging to a file."""

    def __init__(self, log: Path, **env: str) -> None:
        self.log_path = log
        self.log = log.open("ab")
        environ = {**os.environ, "MPR_WORKERS": "1", "MPR_LOG_LEVEL": "INFO", "MPR_LOCAL_HEARTBEAT_INTERVAL": "0.5"}
        self.proc = subprocess.Popen([MPR, "worker"], env={**environ, **env}, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()


def owned_by(owner: int) -> list[int]:
    """Live (not zombie) processes whose MPR_FFMPEG_OWNER names process ``owner``."""
    marker = f"{ffmpeg.OWNER_ENV}={owner}:".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and alive(int(entry)):
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if any(var.startswith(marker) for var in environ.split(b"\0")):
                pids.append(int(entry))
    return pids


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a killed orphan stays a zombie until init reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def is_ffmpeg(pid: int) -> bool:
    """True when ``pid`` runs an ffmpeg binary (not a wrapper script that mentions ffmpeg)."""
    return Path(command(pid).split(" ")[0]).name.startswith("ffmpeg") and "wrapper" not in command(pid).split(" ")[0]


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


async def running_ffmpegs(job_id, worker: Worker, count: int, timeout: float = 60) -> list[int]:
    """Wait until the job is PROCESSING with at least ``count`` ffmpeg processes of ``worker`` encoding."""
    deadline = time.monotonic() + timeout
    while True:
        job = await TranscodeJob.get(id=job_id)
        pids = [p for p in owned_by(worker.pid) if is_ffmpeg(p)]
        if job.status is JobStatus.PROCESSING and job.progress >= 1 and len(pids) >= count:
            return pids
        if job.status is not JobStatus.PENDING and job.status is not JobStatus.PROCESSING:
            raise AssertionError(f"job ended {job.status.value} ({job.error})\n{worker.text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job.status.value} at {job.progress:.0f}% with ffmpegs {pids}\n{worker.text()}")
        await asyncio.sleep(0.1)


async def gone_within(pids: list[int], seconds: float) -> float:
    """Seconds until every pid is dead; fails (killing them) after ``seconds``."""
    start = time.monotonic()
    while any(alive(p) for p in pids):
        if time.monotonic() - start > seconds:
            left = {p: command(p) for p in pids if alive(p)}
            for p in left:
                os.kill(p, signal.SIGKILL)
            raise AssertionError(f"still running {seconds} s later: {left}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_sigkilled_worker_takes_its_ffmpeg_with_it(queued, tmp_path):
    job = await service.create_job(queued.id, "h264-720p")
    worker = Worker(tmp_path / "worker.log")
    try:
        pids = await running_ffmpegs(job.id, worker, 1)
        os.kill(worker.pid, signal.SIGKILL)
        took = await gone_within(pids, 3.0)
        assert took < 3.0
        assert (await TranscodeJob.get(id=job.id)).status is JobStatus.PROCESSING  # the reaper's job, not ffmpeg's
    finally:
        worker.stop()


async def test_sigkilled_worker_takes_the_chunked_pipelines_ffmpegs_with_it(queued, tmp_path):
    job = await service.create_job(queued.id, "h264-720p", chunked=True, chunk_seconds=2, chunk_workers=2)
    worker = Worker(tmp_path / "worker.log")
    try:
        pids = await running_ffmpegs(job.id, worker, 2)  # two chunk encoders (or a chunk and the audio) at once
        assert len({os.getpgid(p) for p in pids}) == len(pids)  # each in a process group of its own
        os.kill(worker.pid, signal.SIGKILL)
        await gone_within(pids, 3.0)
        await asyncio.sleep(1.0)
        assert owned_by(worker.pid) == []  # and the pipeline started no new one on its way down
    finally:
        worker.stop()


async def test_reaper_kills_what_the_death_signal_misses_under_a_wrapper(queued, tmp_path):
    # A wrapper that forks ffmpeg (no exec): the death signal stops the shell, not the ffmpeg under it.
    # (ffmpeg at native speed, as in the fixture: the orphan cannot end by itself before the reaper)
    wrapper = tmp_path / "ffmpeg-wrapper"
    wrapper.write_text(f'#!/bin/sh\n"{os.environ["MPR_FFMPEG"]}" "$@"\nexit $?\n')
    wrapper.chmod(0o755)
    job = await service.create_job(queued.id, "h264-720p")
    first = Worker(tmp_path / "worker-1.log", MPR_FFMPEG=str(wrapper))
    second = None
    try:
        pids = await running_ffmpegs(job.id, first, 1)
        shells = [p for p in owned_by(first.pid) if p not in pids]
        assert shells, "the wrapper shell should be running too"
        os.kill(first.pid, signal.SIGKILL)
        await gone_within(shells, 3.0)
        await asyncio.sleep(1.0)
        assert all(alive(p) for p in pids)  # orphaned: the kernel did not stop it

        # the first worker is a zombie now (not waited for): dead all the same
        second = Worker(tmp_path / "worker-2.log")
        took = await gone_within(pids, 10.0)  # the reaper's first pass runs at start-up, before any timeout
        assert took < 10.0
        assert "killed orphaned ffmpeg process group" in second.text(), (took, second.text())
    finally:
        first.stop()
        if second is not None:
            second.stop()


def _sleeper(owner: str) -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"], env={**os.environ, ffmpeg.OWNER_ENV: owner}, start_new_session=True)


def test_find_orphans_knows_a_live_owner_from_a_dead_or_reused_pid():
    me = os.getpid()
    mine = _sleeper(ffmpeg.owner_token())  # started by this (live) process
    reused = _sleeper(f"{me}:1")  # this pid, but an older process that had it first
    dead_owner = subprocess.Popen(["true"])
    dead_owner.wait()
    dead = _sleeper(f"{dead_owner.pid}:{12345}")
    try:
        time.sleep(0.1)
        found = ffmpeg.find_orphans({me, dead_owner.pid})
        assert mine.pid not in found
        assert reused.pid in found
        assert dead.pid in found
        assert ffmpeg.find_orphans({dead_owner.pid}) == [dead.pid]  # limited to the owners asked for
        killed = ffmpeg.kill_orphans({me, dead_owner.pid})
        assert sorted(killed) == sorted([reused.pid, dead.pid])
        assert reused.wait(5) == -signal.SIGKILL
        assert dead.wait(5) == -signal.SIGKILL
        assert mine.poll() is None
    finally:
        for p in (mine, reused, dead):
            p.kill()
            p.wait()


@pytest.mark.parametrize("marker", ["", "abc:1", ":", "-5:1", "12 34:1"])
def test_find_orphans_ignores_a_malformed_marker(marker):
    proc = _sleeper(marker)
    try:
        time.sleep(0.1)
        assert proc.pid not in ffmpeg.find_orphans()
    finally:
        proc.kill()
        proc.wait()


def test_ffmpeg_run_marks_its_process_with_its_owner(tmp_path):
    argv = ffmpeg.build_command(
        make_clip(tmp_path / "in.mp4", seconds=12.0, size="640x480"), tmp_path / "out.mp4", _preset()
    )
    argv[1:1] = ["-re"]  # at native speed: still running after the 10 s the test may look for it
    cancel = threading.Event()
    errors: list[BaseException] = []

    def go() -> None:
        try:
            ffmpeg.run(argv, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=go)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        pids: list[int] = []
        while not pids and time.monotonic() < deadline:
            pids = [p for p in owned_by(os.getpid()) if is_ffmpeg(p)]
            time.sleep(0.05)
        assert len(pids) == 1
        status = Path(f"/proc/{pids[0]}/status").read_text()
        assert os.getpgid(pids[0]) == pids[0]  # own process group
        assert pids[0] not in ffmpeg.find_orphans()  # its owner (this process) is alive
        environ = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
        assert f"{ffmpeg.OWNER_ENV}={ffmpeg.owner_token()}".encode() in environ
        assert "PPid:\t" + str(os.getpid()) in status
    finally:
        cancel.set()
        thread.join(10)
    assert errors and isinstance(errors[0], ffmpeg.Cancelled)


def _preset():
    from mpr.presets import Preset

    return Preset(name="t", container="mp4", video_codec="libx264", audio_codec="aac", speed_preset="veryslow")
