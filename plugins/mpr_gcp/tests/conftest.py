"""Fixtures of the gcp executor's tests: moto as GCS, the fake Cloud Run API, a running MPR app.

Everything is real except the Cloud Run control plane: the fake launches
real ``python -m mpr_gcp.task`` processes, which read and write "GCS"
(moto's S3 API behind a ``gs://`` root, as GCS's own S3 API would be used)
and call the MPR app back over HTTP with a signed request.
"""

from __future__ import annotations

import asyncio
import socket
import stat
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import pytest
from mpr_storage_s3.testing import moto_server, s3_bucket  # noqa: F401

from mpr.presets import Preset
from testkit import ffmpeg_bin, make_clip

JOB = "projects/mpr-test/locations/europe-west1/jobs/mpr-transcode"
SECRET = "gcp-test-callback-secret"

FAST = Preset(
    name="gcp-test-h264",
    container="mp4",
    video_codec="libx264",
    crf=28,
    speed_preset="ultrafast",
    audio_codec="aac",
    audio_bitrate="64k",
    extra={"pix_fmt": "yuv420p", "faststart": True},
)


def reset_caches() -> None:
    from mpr_gcp.settings import get_gcp_settings

    from mpr.executors import reset_executors
    from mpr.settings import get_settings
    from mpr.storage import reset_storage

    get_settings.cache_clear()
    get_gcp_settings.cache_clear()
    reset_storage()
    reset_executors()


@pytest.fixture(scope="session")
def gop_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s 320x240 H.264 + AAC with a keyframe every second: three 1 s chunks."""
    return make_clip(tmp_path_factory.mktemp("gcp-src") / "clip.mp4", seconds=3.0, gop=25)


@dataclass
class Gcs:
    """A bucket on the moto server used through ``gs://`` roots, and the env a task needs to reach it."""

    bucket: str
    endpoint: str
    task_env: dict[str, str] = field(default_factory=dict)

    def storage(self, which: str = "out"):
        from mpr.storage import media_in, media_out

        return media_in() if which == "in" else media_out()


@pytest.fixture
def gcs(media, s3_bucket, moto_server, monkeypatch: pytest.MonkeyPatch) -> Gcs:  # noqa: F811
    """MEDIA_IN/MEDIA_OUT as gs://bucket/in and gs://bucket/out, GCS's S3 API played by moto."""
    env = {
        "MPR_GS_ENDPOINT_URL": moto_server.url,
        "MPR_GS_ACCESS_KEY_ID": "testing",
        "MPR_GS_SECRET_ACCESS_KEY": "testing",
        "MPR_CALLBACK_SECRET": SECRET,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MEDIA_IN", f"gs://{s3_bucket}/in")
    monkeypatch.setenv("MEDIA_OUT", f"gs://{s3_bucket}/out")
    reset_caches()
    yield Gcs(bucket=s3_bucket, endpoint=moto_server.url, task_env=env)
    reset_caches()


def ffmpeg_wrapper(path: Path, body: str) -> Path:
    """An executable that runs shell ``body`` and then the real ffmpeg (to slow down or break chosen tasks)."""
    path.write_text(f'#!/bin/sh\n{body}\nexec "{ffmpeg_bin()}" "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def cloud_run(gcs: Gcs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """The fake Cloud Run Admin API (parallelism 2, 1 retry per task); MPR_GCP_* point the executor at it."""
    from mpr_gcp.testing.fake_cloud_run import FakeCloudRun

    env = {**gcs.task_env, "MPR_LOG_LEVEL": "INFO", "MPR_VAR_DIR": str(tmp_path / "task-var")}
    api = FakeCloudRun([JOB], env=env, parallelism=2, max_retries=1, grace_seconds=5, log_dir=tmp_path / "cloud-run")
    with api:
        monkeypatch.setenv("MPR_GCP_JOB", JOB)
        monkeypatch.setenv("MPR_GCP_API_ENDPOINT", api.url)
        monkeypatch.setenv("MPR_GCP_MAX_RETRIES", "1")
        monkeypatch.setenv("MPR_GCP_POLL_SECONDS", "0.2")
        monkeypatch.setenv("MPR_GCP_WATCH_SECONDS", "0.3")
        reset_caches()
        yield api
    reset_caches()


class CallbackRecorder:
    """A forwarding HTTP proxy in front of the MPR app that records every callback (to replay one)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.calls: list[tuple[str, dict[str, str], bytes, int]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower().startswith(("x-mpr", "content-type"))}
                request = urllib.request.Request(recorder.target + self.path, data=body, headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        status, data = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, data = exc.code, exc.read()
                recorder.calls.append((self.path, headers, body, status))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class App:
    url: str
    recorder: CallbackRecorder


@pytest.fixture
async def mpr_app(db, gcs: Gcs, cloud_run, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    """The MPR app (create_app) served by uvicorn on a free port on this test's loop, MPR_EXECUTOR=gcp.

    MPR_PUBLIC_URL points at a recording proxy in front of it, so the tasks'
    callbacks go through the proxy and can be replayed.
    """
    import uvicorn

    from mpr.api.app import create_app
    from mpr.settings import get_settings

    # bound here and handed to uvicorn: no window in which another process could take a "free" port
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with sock, CallbackRecorder(f"http://127.0.0.1:{port}") as recorder:
        monkeypatch.setenv("MPR_PUBLIC_URL", recorder.url)
        monkeypatch.setenv("MPR_EXECUTOR", "gcp")
        reset_caches()
        app = create_app(get_settings())
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.05)
        try:
            yield App(url=f"http://127.0.0.1:{port}", recorder=recorder)
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 30)
