"""Fail fast: once one chunk task of a Cloud Run execution failed for good, the others stop.

The fake Cloud Run API runs real task processes (8 one-second chunks + the
concat task, 2 at a time, 1 retry). An ``ffmpeg`` wrapper records every
ffmpeg start (task index, attempt, time) in a file before running the real
one, so "did not encode" is read from what the tasks really did, not from
their logs alone.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path

import pytest

from mpr.chunker.plan import plan_chunks
from mpr.models import JobStatus
from testkit import ffmpeg_bin, make_clip

from .conftest import FAST, ffmpeg_wrapper
from .test_gcp_executor import seed_job, wait_final

pytestmark = pytest.mark.timeout(240)
# end to end on SQLite only (CPU time; the database plays no part in fail fast)
SQLITE_ONLY = pytest.mark.parametrize("db", ["sqlite"], indirect=True)

CHUNKS = 8
CONCAT = CHUNKS  # the last task's index


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s, keyframe every second: eight 1 s chunks (more than the fake's parallelism of 2)."""
    return make_clip(tmp_path_factory.mktemp("gcp-fail-fast") / "clip.mp4", seconds=8.0, gop=25)


def recording_ffmpeg(tmp_path: Path, *, failing: int, slow: float, fail_after: float = 0.0) -> tuple[Path, Path]:
    """An ffmpeg that records each encode, fails for task ``failing`` and sleeps ``slow`` s first for the others."""
    record = tmp_path / "ffmpeg-starts.txt"
    body = (
        # capability probes (-encoders, -version) are not encodes: straight to the real ffmpeg
        f'case " $* " in *" -encoders "*|*" -version "*|*" -filters "*) exec "{ffmpeg_bin()}" "$@";; esac\n'
        f'echo "$CLOUD_RUN_TASK_INDEX $CLOUD_RUN_TASK_ATTEMPT $(date +%s.%N)" >> "{record}"\n'
        f'if [ "$CLOUD_RUN_TASK_INDEX" = "{failing}" ]; then sleep {fail_after}; '
        'echo "chunk: Invalid data found in test" >&2; exit 1; fi\n'
        f"sleep {slow}"
    )
    return ffmpeg_wrapper(tmp_path / "ffmpeg-recording", body), record


def ffmpeg_starts(record: Path) -> dict[int, set[int]]:
    """The attempts in which each task index started ffmpeg (at least once)."""
    attempts: dict[int, set[int]] = {}
    if record.exists():
        for line in record.read_text().splitlines():
            index, attempt = (int(v) for v in line.split()[:2])
            attempts.setdefault(index, set()).add(attempt)
    return attempts


def stored_chunks(gcs) -> list[int]:
    keys = [o.key for o in gcs.storage("out").list("_mpr/")]
    return sorted(int(k.rsplit("chunk-", 1)[1].split(".")[0]) for k in keys if "/chunk-" in k)


@SQLITE_ONLY
async def test_failed_chunk_cancels_the_execution_and_later_chunks_never_encode(
    mpr_app, cloud_run, gcs, long_clip, tmp_path
):
    """The failed callback fails the job; the server's watcher then cancels the execution."""
    from mpr.executors import get_executor

    wrapper, record = recording_ffmpeg(tmp_path, failing=1, slow=3)
    cloud_run.env["MPR_FFMPEG"] = str(wrapper)
    # containers take a second to start, as on Cloud Run: without it the 7 tasks left after the
    # failure find the marker and exit within CANCEL_DELAY on a fast machine, and the execution
    # ends by itself (NON_ZERO_EXIT_CODE) before the server's cancel
    cloud_run.start_seconds = 1.0
    job = await seed_job(long_clip)
    started = time.monotonic()
    name = await get_executor("gcp").submit(job)
    assert cloud_run.executions[name].task_count == CHUNKS + 1

    failed = await wait_final(job.id)
    execution = await asyncio.to_thread(cloud_run.wait, name, 60)
    elapsed = time.monotonic() - started
    log = cloud_run.task_log(name)
    assert failed.status == JobStatus.FAILED, log
    assert "task 1 (chunk 1 (1.000-2.000 s))" in failed.error and "after 2 attempt(s)" in failed.error
    assert "Invalid data found in test" in failed.error
    # both attempts ran, and the last one exited by itself before the cancel (CANCEL_DELAY)
    assert execution.tasks[1].state == "failed" and execution.tasks[1].exit_codes == [1, 1]

    # the execution was cancelled: the tasks still queued never started, the running ones stopped
    data = execution.to_json()
    assert data["conditions"][0].get("executionReason") == "CANCELLED", data
    assert ("POST", f"/v2/{name}:cancel") in [(m, p) for m, p, _ in cloud_run.requests]
    never_started = [t.index for t in execution.tasks if not t.logs]
    assert CONCAT in never_started, (never_started, log)
    # the few started before the cancel (CANCEL_DELAY after the callback) found the marker and did nothing
    for task in execution.tasks[2:]:
        if task.logs:
            assert task.exit_codes in ([0], [-15], [143]), (task.index, log)

    starts = ffmpeg_starts(record)
    assert starts[1] == {0, 1}  # the failing chunk, both attempts
    encoded_elsewhere = sorted(i for i in starts if i != 1)
    # at most the one chunk task per free slot that started before the failure was known
    assert len(encoded_elsewhere) <= 2 and all(i < 4 for i in encoded_elsewhere), (starts, log)
    assert not [i for i in stored_chunks(gcs) if i >= 4]
    assert not await asyncio.to_thread(gcs.storage("out").exists, "clip-gcp.mp4")
    # without fail fast: 7 chunks x (3 s + encode) two at a time, then the concat (> 12 s)
    print(f"fail-fast (server cancel): job failed and execution over in {elapsed:.1f} s; ffmpeg starts {starts}")


@SQLITE_ONLY
async def test_without_the_server_watcher_tasks_stop_on_the_failure_marker(
    mpr_app, cloud_run, gcs, long_clip, tmp_path, monkeypatch
):
    """No watcher (MPR_GCP_WATCH_SECONDS=0): the running chunk's ffmpeg is stopped, later tasks exit at once."""
    from mpr_gcp.settings import get_gcp_settings

    from mpr.executors import get_executor, reset_executors

    monkeypatch.setenv("MPR_GCP_WATCH_SECONDS", "0")
    get_gcp_settings.cache_clear()
    reset_executors()
    # task 0 would spend 60 s in "ffmpeg"; task 1 fails once it surely runs (both attempts)
    wrapper, record = recording_ffmpeg(tmp_path, failing=1, slow=60, fail_after=1)
    cloud_run.env["MPR_FFMPEG"] = str(wrapper)
    job = await seed_job(long_clip)
    started = time.monotonic()
    name = await get_executor("gcp").submit(job)

    failed = await wait_final(job.id)
    try:
        execution = await asyncio.to_thread(cloud_run.wait, name, 50)
    except TimeoutError as exc:
        raise AssertionError(cloud_run.task_log(name)) from exc
    elapsed = time.monotonic() - started
    log = cloud_run.task_log(name)
    assert failed.status == JobStatus.FAILED and "task 1 (chunk 1" in failed.error, log
    assert not [m for m, p, _ in cloud_run.requests if p.endswith(":cancel")]  # nobody cancelled
    assert elapsed < 50, log  # task 0 alone would have taken 60 s

    task0 = execution.tasks[0]
    assert task0.exit_codes == [0], log  # stopped, not failed: nothing to retry
    assert "chunk 0 (0.000-1.000 s) stopped midway" in log
    for task in execution.tasks[2:]:
        assert task.exit_codes == [0], (task.index, log)
    assert f"task {CONCAT} stopped early" in log and "chunk 7 (7.000-8.000 s) not run" in log

    starts = ffmpeg_starts(record)
    assert set(starts) == {0, 1}, (starts, log)  # no later chunk, nor the concat's audio, ran ffmpeg
    assert stored_chunks(gcs) == []
    data = execution.to_json()
    assert data["failedCount"] == 1 and data["succeededCount"] == CHUNKS  # the failed task fails the execution
    assert data["conditions"][0]["executionReason"] == "NON_ZERO_EXIT_CODE"
    print(f"fail-fast (tasks only): execution over in {elapsed:.1f} s; ffmpeg starts {starts}")


@SQLITE_ONLY
async def test_lost_failed_callback_fails_the_job_from_the_marker_and_cancels(
    mpr_app, cloud_run, gcs, long_clip, tmp_path, monkeypatch
):
    """The failed task cannot call back (wrong secret): the watcher reads its marker, fails the job, cancels."""
    from mpr_gcp import executor as gcp_executor

    from mpr.executors import get_executor

    monkeypatch.setattr(gcp_executor, "MARKER_GRACE", 1.0)
    cloud_run.env["MPR_CALLBACK_SECRET"] = "not-the-servers-secret"
    wrapper, record = recording_ffmpeg(tmp_path, failing=1, slow=3)
    cloud_run.env["MPR_FFMPEG"] = str(wrapper)
    # containers take a second to start, as on Cloud Run: without it the 7 tasks left after the failure
    # find the marker and exit before the watcher's cancel (MARKER_GRACE after the marker's mtime)
    # on a fast machine, and the execution ends by itself (NON_ZERO_EXIT_CODE)
    cloud_run.start_seconds = 1.0
    job = await seed_job(long_clip)
    name = await get_executor("gcp").submit(job)

    failed = await wait_final(job.id, 90)
    execution = await asyncio.to_thread(cloud_run.wait, name, 60)
    log = cloud_run.task_log(name)
    assert "was refused" in log  # the callback really was lost
    assert failed.status == JobStatus.FAILED, log
    assert "Cloud Run task 1 (chunk 1 (1.000-2.000 s)) failed after 2 attempt(s)" in failed.error
    assert "Invalid data found in test" in failed.error
    assert execution.to_json()["conditions"][0].get("executionReason") == "CANCELLED"
    assert CONCAT in [t.index for t in execution.tasks if not t.logs]
    assert all(i < 4 for i in ffmpeg_starts(record)), log


# --- the task process on its own (no fake API) ------------------------------


@pytest.fixture
def restore_sigterm():
    """task.main() installs its SIGTERM handler in this process: put pytest's back."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def spec(gcs, long_clip):
    from mpr_gcp.spec import TaskSpec

    from mpr.storage import media_in

    media_in().put("clip.mp4", long_clip)
    return TaskSpec(
        job_id="j-fail-fast",
        source_key="clip.mp4",
        output_key="clip-out.mp4",
        preset=FAST.to_dict(),
        callback_url="http://127.0.0.1:9/unused",  # nothing may be called back
        chunks=tuple(plan_chunks(long_clip, 1.0)),
        max_retries=1,
        poll_seconds=0.1,
        media={"MEDIA_IN": f"gs://{gcs.bucket}/in", "MEDIA_OUT": f"gs://{gcs.bucket}/out"},
    )


def _env(spec, index: int, attempt: int = 0) -> dict[str, str]:
    return {
        **spec.to_env(),
        "CLOUD_RUN_TASK_INDEX": str(index),
        "CLOUD_RUN_TASK_COUNT": str(spec.task_count),
        "CLOUD_RUN_TASK_ATTEMPT": str(attempt),
    }


def _store_marker(gcs, spec) -> None:
    """What a task's report_failure stores."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"task": 1, "error": "Cloud Run task 1 (chunk 1) failed"}, fh)
    gcs.storage("out").put(spec.failed_key, Path(fh.name))
    Path(fh.name).unlink()


def _no_ffmpeg(tmp_path, monkeypatch) -> Path:
    """ffmpeg that records its start and fails: a task that ran it would exit 1."""
    from mpr.settings import get_settings

    record = tmp_path / "ffmpeg-starts.txt"
    wrapper = ffmpeg_wrapper(tmp_path / "no-ffmpeg", f'echo started >> "{record}"; exit 9')
    monkeypatch.setenv("MPR_FFMPEG", str(wrapper))
    get_settings.cache_clear()
    return record


@pytest.mark.parametrize("index", [0, 5, CONCAT])
def test_task_started_after_a_peer_failed_exits_0_without_ffmpeg(
    gcs, spec, tmp_path, monkeypatch, caplog, restore_sigterm, index
):
    from mpr_gcp import task

    record = _no_ffmpeg(tmp_path, monkeypatch)
    _store_marker(gcs, spec)
    caplog.set_level("INFO", logger="mpr_gcp.task")
    # exit 0 with this message: the marker was seen first (a chunk task would have run the failing
    # ffmpeg and exited 1; the concat task would have waited for its chunks)
    assert task.main(_env(spec, index)) == 0
    assert not record.exists()
    assert f"task {index} stopped early: another task failed for good" in caplog.text
    out = gcs.storage("out")
    assert not out.exists(spec.chunk_key(index, "mp4")) and not out.exists(spec.audio_key("mp4"))
    assert not out.exists("clip-out.mp4")


def test_running_chunk_stops_its_ffmpeg_when_the_marker_appears(gcs, spec, tmp_path, monkeypatch, restore_sigterm):
    from mpr_gcp import task

    from mpr.settings import get_settings

    record = tmp_path / "ffmpeg-starts.txt"
    slow = ffmpeg_wrapper(tmp_path / "slow-ffmpeg", f'echo "started $$" >> "{record}"; sleep 60')
    monkeypatch.setenv("MPR_FFMPEG", str(slow))
    get_settings.cache_clear()

    def fail_peer_once_ffmpeg_runs() -> None:
        deadline = time.monotonic() + 60
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        _store_marker(gcs, spec)

    writer = threading.Thread(target=fail_peer_once_ffmpeg_runs, daemon=True)
    writer.start()
    started = time.monotonic()
    assert task.main(_env(spec, 3)) == 0
    took = time.monotonic() - started
    writer.join(5)
    # ffmpeg was running, and was stopped: the wrapper alone sleeps 60 s (bound with room for a loaded machine)
    assert record.exists() and took < 45, took
    pid = int(record.read_text().split()[1])
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not gcs.storage("out").exists(spec.chunk_key(3, "mp4"))


def test_real_failure_of_a_task_is_still_reported_not_skipped(gcs, spec, tmp_path, monkeypatch, restore_sigterm):
    """No marker: ffmpeg's own failure exits 1 (Cloud Run retries), and the marker check does not hide it."""
    from mpr_gcp import task

    record = _no_ffmpeg(tmp_path, monkeypatch)
    assert task.main(_env(spec, 2)) == 1
    assert record.exists()
    assert not gcs.storage("out").exists(spec.failed_key)  # attempt 0 of 2: not the last one


def test_single_pass_task_ignores_markers(gcs, spec, tmp_path, monkeypatch, restore_sigterm):
    """A marker only concerns chunked executions: a single-pass spec never looks for one."""
    import dataclasses

    from mpr_gcp.task import TaskRunner

    from mpr.settings import get_settings

    single = dataclasses.replace(spec, chunks=())
    _store_marker(gcs, single)
    assert gcs.storage("out").exists(single.failed_key)
    runner = TaskRunner(single, get_settings(), 0)
    assert runner.role == "single"
    runner.check_peers()  # no PeerFailed: a single-pass task has no peers
