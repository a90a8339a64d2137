"""Outgoing job notifications (MPR_NOTIFY_URL): a real HTTP receiver, real jobs on the local executor."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mpr import jobs, notify, service
from mpr.bus import get_bus
from mpr.callbacks import verify
from mpr.errors import ConfigError, InvalidTransition
from mpr.models import AssetKind, AssetStatus, JobStatus, MediaAsset, TranscodeJob
from mpr.settings import Settings
from testkit import REDIS_URL, _reset_caches, free_port, make_clip, realtime_ffmpeg, redis_available, require, serving

pytestmark = pytest.mark.timeout(180)

SECRET = "notify-test-secret"


class Receiver:
    """A real HTTP server in a thread that records every POST and answers per ``script``.

    ``script`` holds the status codes of the first requests (then 200); ``hang`` makes the
    first request wait until :meth:`release` (the handler is then "in flight").
    """

    def __init__(self, script: list[int] | None = None, hang: bool = False) -> None:
        self.script = list(script or [])
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.gate = threading.Event()
        if not hang:
            self.gate.set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    first = not receiver.requests
                    # header names are case-insensitive (urllib sends "X-mpr-delivery"): kept lower-cased
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.requests.append({"headers": headers, "body": body, "path": self.path})
                    code = receiver.script.pop(0) if receiver.script else 200
                    receiver.in_flight += 1
                try:
                    if first:
                        receiver.gate.wait(120)
                    self.send_response(code)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?token=abc"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def release(self) -> None:
        self.gate.set()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests]

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.release()
    notify.close_all(30)
    for r in made:
        r.close()


async def until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_job(job_id: Any, *statuses: JobStatus, progress: float = 0.0) -> TranscodeJob:
    deadline = time.monotonic() + 90
    while True:
        job = await TranscodeJob.get(id=job_id)
        if job.status in statuses and job.progress >= progress:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job is {job.status.value} at {job.progress:.0f}% ({job.error}), wanted {statuses}")
        await asyncio.sleep(0.05)


async def flushed() -> None:
    assert await asyncio.to_thread(notify.flush_all, 60), "notifications still queued"


def check_signed(request: dict[str, Any], secret: str = SECRET) -> None:
    verify(request["headers"], request["body"], secret)  # raises AuthError when it does not verify
    assert request["headers"]["x-mpr-signature"].startswith("sha256=")
    uuid.UUID(request["headers"]["x-mpr-delivery"])
    assert request["headers"]["content-type"] == "application/json"


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s 640x480: still encoding to 720p when the test cancels it."""
    return make_clip(tmp_path_factory.mktemp("notify") / "long.mp4", seconds=20.0, size="640x480")


@pytest.fixture
async def start_app(db, media, monkeypatch):
    async for start in serving(monkeypatch):
        yield start


async def add_asset(media: dict[str, Path], clip: Path, name: str) -> MediaAsset:
    from mpr import scan

    shutil.copyfile(clip, media["in"] / name)
    asset, _ = await scan.register(name)
    assert asset.status is AssetStatus.READY, asset.error
    return asset


async def test_completed_failed_and_cancelled_jobs_each_send_one_signed_post(
    start_app, receivers, media, clips, long_clip
):
    recv = receivers()
    # long.mp4 encodes at native speed (the others at full speed): still running at the cancel on any machine
    realtime = realtime_ffmpeg(media["var"] / "ffmpeg-realtime", only="long.mp4")
    await start_app(worker=True, MPR_NOTIFY_URL=recv.url, MPR_NOTIFY_SECRET=SECRET, MPR_FFMPEG=str(realtime))
    good = await add_asset(media, clips["video"], "good.mp4")
    bad = await add_asset(media, clips["video"], "bad.mp4")
    (media["in"] / "bad.mp4").write_bytes(clips["truncated"].read_bytes())  # corrupt after the probe
    long = await add_asset(media, long_clip, "long.mp4")

    done = await service.create_job(good.id, "h264-720p")
    failed = await service.create_job(bad.id, "h264-720p")
    done = await wait_job(done.id, JobStatus.COMPLETED, JobStatus.FAILED)
    failed = await wait_job(failed.id, JobStatus.COMPLETED, JobStatus.FAILED)
    assert (done.status, failed.status) == (JobStatus.COMPLETED, JobStatus.FAILED), done.error
    running = await service.create_job(long.id, "h264-720p")
    await wait_job(running.id, JobStatus.PROCESSING, progress=1.0)
    cancelled = await service.cancel_job(running.id)
    assert cancelled.status is JobStatus.CANCELLED

    await until(lambda: len(recv.requests) >= 3, "three notifications")
    await flushed()
    assert len(recv.requests) == 3  # exactly one per finished job, nothing for PENDING/PROCESSING
    by_job = {b["job"]["id"]: (b, r) for b, r in zip(recv.bodies(), recv.requests)}
    assert set(by_job) == {str(done.id), str(failed.id), str(cancelled.id)}
    assert len({r["headers"]["x-mpr-delivery"] for r in recv.requests}) == 3
    for job, event in ((done, "job.completed"), (failed, "job.failed"), (cancelled, "job.cancelled")):
        body, request = by_job[str(job.id)]
        check_signed(request)
        assert request["path"] == "/hook?token=abc"
        assert request["headers"]["x-mpr-event"] == event
        job = await TranscodeJob.get(id=job.id)
        assert body["event"] == event
        assert body["job"] == {
            "id": str(job.id),
            "status": job.status.value,
            "sourceAssetId": str(job.source_asset_id),
            "sourcePath": job.source_path,
            "preset": "h264-720p",
            "outputPath": job.output_path,
            "outputSize": job.output_size,
            "error": job.error,
            "startedAt": job.started_at.isoformat(),
            "finishedAt": job.finished_at.isoformat(),
            "attempts": job.attempts,
        }
        assert body["sentAt"] >= body["job"]["finishedAt"][:19]
    assert by_job[str(done.id)][0]["job"]["outputSize"] == (media["out"] / done.output_path).stat().st_size
    assert "moov atom not found" in by_job[str(failed.id)][0]["job"]["error"]
    assert by_job[str(cancelled.id)][0]["job"]["startedAt"] is not None


async def test_a_hanging_receiver_holds_up_neither_the_worker_nor_the_transitions(
    sqlite_db, media, monkeypatch, receivers, clips
):
    monkeypatch.setattr(notify, "TIMEOUT", 120.0)  # the hang must not end by timeout while the test runs
    recv = receivers(hang=True)
    async for start in serving(monkeypatch):
        await start(worker=True, MPR_NOTIFY_URL=recv.url, MPR_NOTIFY_SECRET=SECRET)
        first = await add_asset(media, clips["video"], "first.mp4")
        second = await add_asset(media, clips["video"], "second.mp4")
        job_a = await service.create_job(first.id, "copy")
        await wait_job(job_a.id, JobStatus.COMPLETED)
        # A's notification reached the receiver, which holds it without answering
        await until(lambda: recv.in_flight == 1, "the first notification to hang")

        # meanwhile the (single) worker runs the next job to the end and its transition completes
        job_b = await service.create_job(second.id, "copy")
        job_b = await wait_job(job_b.id, JobStatus.COMPLETED)
        final = [e for e in await get_bus().fetch(str(job_b.id), 0) if e.final]
        assert [e.status for e in final] == ["completed"]
        # ... and B's notification is delivered by another sender while A's is still held
        await until(lambda: len(recv.requests) == 2, "the second notification")
        assert not recv.gate.is_set() and recv.in_flight >= 1
        assert [b["job"]["id"] for b in recv.bodies()] == [str(job_a.id), str(job_b.id)]

        recv.release()
        await flushed()
        assert len(recv.requests) == 2 and recv.in_flight == 0
        for request in recv.requests:
            check_signed(request)


async def test_5xx_is_retried_with_the_same_delivery_id_and_4xx_is_not(receivers, caplog):
    flaky = receivers(script=[500, 503])
    refusing = receivers(script=[400])
    notifier = notify.Notifier((flaky.url, refusing.url), SECRET, backoff=0.05)
    delivery = notifier.submit({"event": "job.completed", "job": {"id": "x"}}, "x")
    assert await asyncio.to_thread(notifier.flush, 60)

    assert len(flaky.requests) == 3  # 500, 503, then 200
    assert {r["headers"]["x-mpr-delivery"] for r in flaky.requests} == {delivery}
    assert len({r["body"] for r in flaky.requests}) == 1
    for request in flaky.requests:
        check_signed(request)
    assert len(refusing.requests) == 1  # a 4xx is final
    assert refusing.requests[0]["headers"]["x-mpr-delivery"] == delivery
    assert any("refused with HTTP 400" in r.getMessage() for r in caplog.records)


async def test_a_receiver_that_keeps_failing_or_is_down_gives_up_after_three_attempts(receivers, caplog):
    broken = receivers(script=[500, 500, 500, 500])
    down = f"http://127.0.0.1:{free_port()}/nobody-listens"
    notifier = notify.Notifier((broken.url, down), None, backoff=0.05)
    with caplog.at_level(logging.WARNING, logger="mpr.notify"):
        notifier.submit({"event": "job.failed", "job": {"id": "y"}}, "y")
        assert await asyncio.to_thread(notifier.flush, 60)
    assert len(broken.requests) == 3
    failures = [r.getMessage() for r in caplog.records if "failed after 3 attempts" in r.getMessage()]
    assert len(failures) == 2, failures
    assert any("HTTP 500" in m for m in failures)
    assert all("token=abc" not in m for m in failures)  # the URL's secret-looking parts stay out of the log
    # unsigned without a secret: timestamp and delivery id, no signature
    assert "x-mpr-signature" not in broken.requests[0]["headers"]
    assert broken.requests[0]["headers"]["x-mpr-timestamp"].isdigit()


async def test_a_full_queue_drops_with_a_warning_instead_of_blocking(receivers, caplog):
    recv = receivers(hang=True)
    notifier = notify.Notifier((recv.url,), SECRET, queue_size=1, threads=1, timeout=120)
    notifier.submit({"event": "job.completed", "job": {"id": "1"}}, "1")
    await until(lambda: recv.in_flight == 1, "the first notification to hang")  # the only sender is stuck
    with caplog.at_level(logging.WARNING, logger="mpr.notify"):
        notifier.submit({"event": "job.completed", "job": {"id": "2"}}, "2")  # waits in the queue
        notifier.submit({"event": "job.completed", "job": {"id": "3"}}, "3")  # no room: dropped, not blocked
    assert [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()] == [
        f"notification queue full (1 waiting): job.completed of job 3 to http://127.0.0.1:{recv.server.server_port} dropped"
    ]
    recv.release()
    assert await asyncio.to_thread(notifier.flush, 60)
    assert [b["job"]["id"] for b in recv.bodies()] == ["1", "2"]


async def _job_row(status: JobStatus = JobStatus.PROCESSING) -> TranscodeJob:
    asset = await MediaAsset.create(
        path=f"{uuid.uuid4().hex}.mp4", filename="x.mp4", kind=AssetKind.VIDEO, status=AssetStatus.READY
    )
    return await TranscodeJob.create(
        source_asset=asset,
        source_path=asset.path,
        output_path=f"out/{uuid.uuid4().hex}.mp4",
        executor="lambda",
        preset_snapshot={"name": "copy"},
        status=status,
        attempts=1,
    )


def _use_notify(monkeypatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _reset_caches()


async def test_racing_final_transitions_notify_once_and_the_event_filter_applies(db, receivers, monkeypatch):
    recv = receivers()
    _use_notify(monkeypatch, MPR_NOTIFY_URL=recv.url, MPR_NOTIFY_EVENTS="completed,job.cancelled")
    raced = await _job_row()
    # a worker's completion, a remote callback's failure and a user's cancel land together: one wins
    outcomes = await asyncio.gather(
        jobs.transition(raced.id, JobStatus.COMPLETED, output_size=123),
        jobs.transition(raced.id, JobStatus.FAILED, error="boom"),
        jobs.transition(raced.id, JobStatus.CANCELLED),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if not isinstance(o, InvalidTransition)]
    assert len(winners) == 1, outcomes
    failed = await _job_row()
    await jobs.transition(failed.id, JobStatus.FAILED, error="boom")  # filtered out
    await flushed()
    won = winners[0].status.value
    expected = [] if won == "failed" else [f"job.{won}"]
    assert [b["event"] for b in recv.bodies()] == expected
    assert all(b["job"]["id"] == str(raced.id) for b in recv.bodies())


async def test_redis_streams_readers_do_not_send_again(sqlite_db, receivers, monkeypatch):
    require("Redis", redis_available(), "127.0.0.1:6379")
    recv = receivers()
    _use_notify(monkeypatch, MPR_NOTIFY_URL=recv.url, MPR_REDIS_URL=REDIS_URL)
    job = await _job_row()
    await jobs.transition(job.id, JobStatus.COMPLETED)
    # what other processes do with the stream: read it back (GraphQL/gRPC subscribers, event consumers)
    events = await get_bus().fetch(str(job.id), 0, wait=5)
    assert [e.status for e in events if e.final] == ["completed"]
    await flushed()
    assert [b["job"]["id"] for b in recv.bodies()] == [str(job.id)]
    await get_bus().close()


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/hook", "file:///etc/passwd", "example.com/hook", "http://", "http://ok.test,gopher://x"],
)
def test_a_non_http_notify_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="MPR_NOTIFY_URL"):
        Settings.from_env({"MPR_NOTIFY_URL": url})


def test_notify_settings_parse_and_redact() -> None:
    s = Settings.from_env(
        {
            "MPR_NOTIFY_URL": "https://hooks.example.com/T0/B1/secret, http://127.0.0.1:9000/x",
            "MPR_NOTIFY_SECRET": "s3",
            "MPR_NOTIFY_EVENTS": "FAILED",
        }
    )
    assert s.notify_urls == ("https://hooks.example.com/T0/B1/secret", "http://127.0.0.1:9000/x")
    assert s.notify_events == ("failed",)
    shown = s.redacted()
    assert shown["notify_secret"] == "***"
    assert shown["notify_urls"] == ("https://hooks.example.com/***", "http://127.0.0.1:9000/***")
    assert Settings.from_env({}).notify_urls == ()
    with pytest.raises(ConfigError, match="MPR_NOTIFY_EVENTS"):
        Settings.from_env({"MPR_NOTIFY_EVENTS": "completed,started"})


def test_mpr_refuses_to_start_with_a_non_http_notify_url(media, monkeypatch) -> None:
    monkeypatch.setenv("MPR_NOTIFY_URL", "ftp://files.example.com/in")
    proc = subprocess.run(
        [sys.executable, "-m", "mpr.cli", "serve", "--no-worker"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "MPR_NOTIFY_URL must be http:// or https://" in proc.stderr and "Traceback" not in proc.stderr


async def test_a_cli_transcode_delivers_its_notification_before_the_process_exits(media, clips, receivers):
    """``mpr transcode`` ends right after its job does: exit waits for the queued delivery and its retry."""
    recv = receivers(script=[503])
    shutil.copyfile(clips["video"], media["in"] / "cli.mp4")
    env = {**os.environ, "MPR_NOTIFY_URL": recv.url, "MPR_NOTIFY_SECRET": SECRET}
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mpr.cli", "transcode", "cli.mp4", "-p", "copy", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(recv.requests) == 2  # 503, then the retry: both before the process was gone
    assert len({r["headers"]["x-mpr-delivery"] for r in recv.requests}) == 1
    body = recv.bodies()[-1]
    assert body["event"] == "job.completed" and body["job"]["preset"] == "copy"
    assert (media["out"] / body["job"]["outputPath"]).stat().st_size == body["job"]["outputSize"]
    check_signed(recv.requests[-1])
