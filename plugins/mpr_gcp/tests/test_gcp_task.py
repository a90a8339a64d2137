"""``python -m mpr_gcp.task`` on its own: retried attempts are idempotent, callbacks are signed."""

from __future__ import annotations

import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mpr import callbacks
from mpr.chunker.plan import plan_chunks

from .conftest import FAST, SECRET, ffmpeg_wrapper

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _restore_sigterm():
    """task.main() installs its SIGTERM handler in this process: put pytest's back."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def receiver():
    """A callback endpoint that checks the signature and keeps the verified bodies."""
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            callbacks.verify(dict(self.headers), body, SECRET)
            got.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/jobs/j1/callback", got
    server.shutdown()
    server.server_close()


def _env(gcs, spec, index: int, attempt: int) -> dict[str, str]:
    return {
        **spec.to_env(),
        "CLOUD_RUN_TASK_INDEX": str(index),
        "CLOUD_RUN_TASK_COUNT": str(spec.task_count),
        "CLOUD_RUN_TASK_ATTEMPT": str(attempt),
        "CLOUD_RUN_EXECUTION": "mpr-transcode-abcde",
    }


@pytest.fixture
def spec(gcs, gop_clip, receiver):
    from mpr_gcp.spec import TaskSpec

    from mpr.storage import media_in

    media_in().put("clip.mp4", gop_clip)
    return TaskSpec(
        job_id="j1",
        source_key="clip.mp4",
        output_key="clip-out.mp4",
        preset=FAST.to_dict(),
        callback_url=receiver[0],
        chunks=tuple(plan_chunks(gop_clip, 1.0)),
        max_retries=2,
        media={"MEDIA_IN": f"gs://{gcs.bucket}/in", "MEDIA_OUT": f"gs://{gcs.bucket}/out"},
    )


def test_retried_chunk_task_reuses_the_stored_chunk(gcs, spec, tmp_path, monkeypatch, caplog):
    from mpr_gcp import task

    from mpr.settings import get_settings

    assert task.main(_env(gcs, spec, 1, 0)) == 0
    assert gcs.storage("out").exists(spec.chunk_key(1, "mp4"))
    # the retry must not need ffmpeg at all: make ffmpeg fail and run attempt 1
    monkeypatch.setenv("MPR_FFMPEG", str(ffmpeg_wrapper(tmp_path / "no-ffmpeg", "exit 9")))
    get_settings.cache_clear()
    caplog.set_level("INFO", logger="mpr_gcp.task")
    assert task.main(_env(gcs, spec, 1, 1)) == 0
    assert "chunk 1 already stored" in caplog.text


def test_retried_concat_task_only_calls_back_again(gcs, spec, receiver, gop_clip, tmp_path, monkeypatch):
    from mpr_gcp import task

    from mpr.settings import get_settings

    gcs.storage("out").put("clip-out.mp4", gop_clip)  # an earlier attempt stored the output, then died
    monkeypatch.setenv("MPR_FFMPEG", str(ffmpeg_wrapper(tmp_path / "no-ffmpeg", "exit 9")))
    get_settings.cache_clear()
    assert task.main(_env(gcs, spec, spec.task_count - 1, 1)) == 0
    (body,) = receiver[1]
    assert body["status"] == "completed" and body["output_key"] == "clip-out.mp4"
    assert body["metrics"]["execution"] == "mpr-transcode-abcde" and body["metrics"]["attempt"] == 1


def test_last_failed_attempt_reports_the_error_and_earlier_ones_do_not(gcs, spec, receiver, tmp_path, monkeypatch):
    from mpr_gcp import task

    from mpr.settings import get_settings

    monkeypatch.setenv("MPR_FFMPEG", str(ffmpeg_wrapper(tmp_path / "bad-ffmpeg", 'echo "boom: disk full" >&2; exit 1')))
    get_settings.cache_clear()
    assert task.main(_env(gcs, spec, 0, 0)) == 1
    assert receiver[1] == []  # Cloud Run will retry: nothing reported yet
    assert task.main(_env(gcs, spec, 0, 2)) == 1  # attempt 2 == max_retries: the last one
    (body,) = receiver[1]
    assert body["status"] == "failed" and "chunk 0" in body["error"] and "boom: disk full" in body["error"]
    assert gcs.storage("out").exists(spec.failed_key)


def test_task_started_outside_an_execution_refuses_to_run(gcs, spec):
    from mpr_gcp import task

    env = _env(gcs, spec, 0, 0)
    env["CLOUD_RUN_TASK_COUNT"] = "2"  # the plan needs 4 tasks
    assert task.main(env) == 2
    assert task.main({"CLOUD_RUN_TASK_INDEX": "0"}) == 2
