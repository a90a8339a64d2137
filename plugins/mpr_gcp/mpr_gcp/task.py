"""The Cloud Run task entrypoint: ``python -m mpr_gcp.task``.

Cloud Run sets ``CLOUD_RUN_TASK_INDEX``, ``CLOUD_RUN_TASK_COUNT`` and
``CLOUD_RUN_TASK_ATTEMPT``; the executor's overrides set the rest (see
:mod:`mpr_gcp.spec`). Media is read from MEDIA_IN and written to MEDIA_OUT
through their storage backends (``gs://`` roots: GCS's S3 API with HMAC
keys, via mpr_storage_s3). Encoding reuses the chunker's functions, so a
Cloud Run job produces the same frames as a local one, trimmed or not (the
job's trim, ``MPR_GCP_TRIM``, reaches every chunk, the audio and the concat).

No task downloads the source: a chunk, the audio and a single-pass encode
read a presigned URL of it (MEDIA_IN's ``url()``, :func:`source_input`) and
fetch only the byte ranges they need; a backend without URLs (a local
folder) falls back to a local copy. The executor's plan reads it the same way.

Every step is idempotent, because Cloud Run retries a task that exits
non-zero: a chunk whose object already exists is not encoded again, a
stored audio track is reused, and a finished output only triggers the
callback again (the receiver treats duplicates as no-ops). A task that
fails on its last attempt stores a ``failed.json`` marker and sends a signed
``failed`` callback with its error.

Fail fast: the job cannot complete once one task failed for good, so every
other task looks for that marker before it starts work and, while ffmpeg
runs, every ``MPR_GCP_POLL_SECONDS`` (a watcher thread that stops ffmpeg);
a task that finds it stops at once and exits 0 (nothing to retry, and the
failed task already fails the execution). The server also cancels the
execution once it knows (see ``GcpExecutor.watch``).
SIGTERM (cancel, timeout) stops ffmpeg and exits 143 without a callback.

No database access: the only way back to MPR is the signed callback.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from mpr import callbacks
from mpr.errors import ConfigError, FFmpegError, MprError, NotFound
from mpr.presets import Preset
from mpr.settings import Settings, get_settings
from mpr.storage import Storage, media_in, media_out
from mpr_gcp.spec import TaskSpec

log = logging.getLogger("mpr_gcp.task")

CALLBACK_TRIES = 4
EXIT_TERMINATED = 143
SOURCE_URL_SECONDS = 6 * 3600
"""Lifetime of the presigned source URL a task's ffmpeg reads (its reconnects must still be signed)."""


class Terminated(BaseException):
    """SIGTERM arrived (the execution was cancelled or timed out). BaseException so nothing swallows it."""


class PeerFailed(MprError):
    """Another task of the execution failed for good; it already reported the error."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


@contextmanager
def source_input(storage: Storage, key: str) -> Iterator[str | Path]:
    """What ffmpeg and PyAV read ``key`` of ``storage`` from: a presigned http(s) URL, else a local copy.

    A local backend's own file comes first (a public MEDIA_BASE_URL would only
    fetch it back over HTTP). NotFound when the object does not exist.
    """
    storage.stat(key)
    path = storage.local_path(key)
    if path is not None:
        yield path
        return
    url = storage.url(key, expires=SOURCE_URL_SECONDS)
    if url and url.startswith(("http://", "https://")):
        yield url
        return
    with storage.local_copy(key) as path:
        yield path


def _download(storage: Storage, key: str, target: Path) -> Path:
    src = storage.open_read(key)
    try:
        with open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
    finally:
        src.close()
    return target


class TaskRunner:
    """Runs task ``index`` (attempt ``attempt``) of a job's execution."""

    def __init__(self, spec: TaskSpec, settings: Settings, index: int, attempt: int = 0, execution: str = "") -> None:
        self.spec = spec
        self.settings = settings
        self.index = index
        self.attempt = attempt
        self.execution = execution
        self.preset = Preset.from_dict(spec.preset)
        self.src = media_in(settings)
        self.out = media_out(settings)

    @property
    def ext(self) -> str:
        from mpr.ffmpeg import output_extension

        return output_extension(self.preset, self.spec.source_key)

    @property
    def trim(self) -> tuple[float | None, float | None]:
        """The job's trim ``(start, end)``; a start of 0 is no start (as in the local pipeline)."""
        return self.spec.trim_start or None, self.spec.trim_end

    @property
    def trimmed(self) -> bool:
        return self.trim != (None, None)

    def source_input(self) -> AbstractContextManager[str | Path]:
        """What this task's encoder reads: a presigned http(s) URL of the source, else a local copy (:func:`source_input`).

        NotFound when the source object does not exist.
        """
        return source_input(self.src, self.spec.source_key)

    @property
    def role(self) -> str:
        """``single``, ``chunk`` or ``concat``."""
        if not self.spec.chunks:
            return "single"
        return "chunk" if self.index < len(self.spec.chunks) else "concat"

    def run(self) -> None:
        """Do this task's part; raises on failure."""
        started = time.monotonic()
        getattr(self, f"run_{self.role}")()
        log.info("task %d (%s) finished in %.1f s", self.index, self.role, time.monotonic() - started)

    # --- roles -----------------------------------------------------------

    def run_single(self) -> None:
        """Encode the whole job in one pass (not chunked, trimmed, audio only or stream copy).

        ffmpeg reads the source through :meth:`source_input` (no download when MEDIA_IN gives URLs).
        """
        from mpr.chunker.encode import encode_whole

        spec = self.spec
        if self.out.exists(spec.output_key):
            log.info("output %s already stored (retry): calling back again", spec.output_key)
        else:
            with self.source_input() as source, tempfile.TemporaryDirectory() as tmp:
                output = Path(tmp) / f"output.{self.ext}"
                encode_whole(source, self.preset, output, start=spec.trim_start, end=spec.trim_end)
                self.out.put(spec.output_key, output)
        self.callback({"status": "completed", "output_key": spec.output_key, "metrics": self.metrics()})

    def run_chunk(self) -> None:
        """Encode video chunk ``index`` and store it under the job's scratch prefix.

        ffmpeg reads only the chunk's part of the source (:meth:`source_input`).
        PeerFailed (before the download, before ffmpeg, or ffmpeg stopped
        midway) when another task failed for good.
        """
        from mpr.chunker.encode import encode_chunk

        chunk = self.spec.chunks[self.index]
        key = self.spec.chunk_key(chunk.index, self.ext)
        if self.out.exists(key):
            log.info("chunk %d already stored as %s (attempt %d): nothing to do", chunk.index, key, self.attempt)
            return
        self.check_peers()
        start, end = self.trim
        with self.source_input() as source, tempfile.TemporaryDirectory() as tmp:
            self.check_peers()
            with self.peer_watch() as cancel:
                part = encode_chunk(
                    source,
                    chunk,
                    self.preset,
                    Path(tmp) / f"chunk.{self.ext}",
                    cancel=cancel,
                    trim_start=start,
                    trim_end=end,
                )
            self.out.put(key, part)
        log.info(
            "chunk %d (%.3f-%.3f s, %d frames) stored as %s", chunk.index, chunk.start, chunk.end, chunk.frames, key
        )

    def run_concat(self) -> None:
        """Encode the audio once, wait for every chunk, concatenate, store the output, call back.

        The audio encode and the concat (the source's subtitles) read the source through :meth:`source_input`.
        """
        from mpr.chunker.concat import concat, placement
        from mpr.chunker.encode import encode_audio

        spec = self.spec
        if self.out.exists(spec.output_key):
            log.info("output %s already stored (retry): calling back again", spec.output_key)
            self.callback({"status": "completed", "output_key": spec.output_key, "metrics": self.metrics()})
            return
        self.check_peers()
        with self.source_input() as source, tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            audio = None
            if self.preset.audio_codec and self._has_audio(source):
                audio = tmp / f"audio.{self.ext}"
                audio_key = spec.audio_key(self.ext)
                if self.out.exists(audio_key):
                    _download(self.out, audio_key, audio)
                else:
                    self.check_peers()
                    with self.peer_watch() as cancel:
                        encode_audio(
                            source,
                            self.preset,
                            audio,
                            duration=spec.chunks[-1].end - spec.chunks[0].start,
                            cancel=cancel,
                            start=self.trim[0],
                            end=self.trim[1],
                        )
                    self.out.put(audio_key, audio)
            parts = self.wait_for_chunks(tmp)
            output = tmp / f"output.{self.ext}"
            durations, video_start = [c.duration for c in spec.chunks], spec.video_start
            if self.trimmed:  # trimmed chunks start at their place in the output: join them there
                durations, video_start = placement(parts)
            concat(
                parts,
                audio,
                output,
                self.preset,
                durations=durations,
                video_start=video_start,
                total=spec.chunks[-1].end - spec.chunks[0].start,
                source=source,  # its subtitles, trimmed as the single pass does
                trim_start=self.trim[0],
                trim_end=self.trim[1],
            )
            self.out.put(spec.output_key, output)
        self.remove_scratch()
        self.callback({"status": "completed", "output_key": spec.output_key, "metrics": self.metrics()})

    # --- helpers ---------------------------------------------------------

    @staticmethod
    def _has_audio(source: str | Path) -> bool:
        import av

        from mpr.chunker.plan import redact, source_name

        try:
            with av.open(str(source)) as container:
                return bool(container.streams.audio)
        except (av.FFmpegError, OSError) as exc:  # a URL's signature stays out of the error
            raise MprError(f"cannot read {source_name(source)}: {redact(str(exc))}") from None

    def wait_for_chunks(self, tmp: Path) -> list[Path]:
        """Download every chunk as it appears; PeerFailed when a chunk task failed for good."""
        spec = self.spec
        paths = [tmp / f"chunk-{c.index:05d}.{self.ext}" for c in spec.chunks]
        pending = list(range(len(spec.chunks)))
        deadline = time.monotonic() + spec.wait_timeout
        while pending:
            for i in list(pending):
                try:
                    _download(self.out, spec.chunk_key(i, self.ext), paths[i])
                except NotFound:
                    continue
                pending.remove(i)
            if not pending:
                break
            if self.out.exists(spec.failed_key):
                raise PeerFailed(f"a chunk task failed; {len(pending)} chunk(s) will never arrive")
            if time.monotonic() > deadline:
                raise MprError(f"timed out after {spec.wait_timeout:.0f} s waiting for chunks {pending}")
            time.sleep(spec.poll_seconds)
        return paths

    def check_peers(self) -> None:
        """PeerFailed when a task of this execution stored the failure marker (chunked jobs only)."""
        if self.spec.chunks and self.out.exists(self.spec.failed_key):
            raise PeerFailed(f"another task failed for good: {self.describe()} not run")

    @contextmanager
    def peer_watch(self) -> Iterator[threading.Event]:
        """An event for ffmpeg's ``cancel``, set when the failure marker appears (checked every poll_seconds).

        Leaving the block raises PeerFailed if ffmpeg was stopped because of it.
        """
        from mpr.ffmpeg import Cancelled

        cancel = threading.Event()
        done = threading.Event()

        def watch() -> None:
            while not done.wait(self.spec.poll_seconds):
                try:
                    if self.out.exists(self.spec.failed_key):
                        cancel.set()
                        return
                except Exception as exc:  # a storage hiccup: the encode goes on, try again
                    log.debug("failure marker check failed: %s", exc)

        watcher = threading.Thread(target=watch, name="peer-watch", daemon=True)
        if self.spec.chunks:
            watcher.start()
        try:
            yield cancel
        except Cancelled:
            if cancel.is_set():
                raise PeerFailed(f"another task failed for good: {self.describe()} stopped midway") from None
            raise
        finally:
            done.set()
            if watcher.is_alive():
                watcher.join(timeout=5)

    def remove_scratch(self) -> None:
        """Delete the job's chunk objects and markers, of this plan and any earlier one (best effort)."""
        try:
            for info in list(self.out.list(self.spec.job_scratch + "/")):
                self.out.delete(info.key)
        except MprError as exc:
            log.warning("scratch objects under %s not removed: %s", self.spec.scratch, exc)

    def metrics(self) -> dict[str, Any]:
        return {
            "executor": "gcp",
            "execution": self.execution,
            "tasks": self.spec.task_count,
            "chunks": len(self.spec.chunks),
            "attempt": self.attempt,
        }

    def describe(self) -> str:
        """Which part of the job this task is, for error messages."""
        if self.role == "chunk":
            c = self.spec.chunks[self.index]
            return f"chunk {c.index} ({c.start:.3f}-{c.end:.3f} s)"
        return {"concat": "concat", "single": "encode"}[self.role]

    def report_failure(self, exc: BaseException) -> None:
        """Last attempt failed: store the failed marker and send the signed ``failed`` callback."""
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, FFmpegError) and getattr(exc, "stderr_tail", ""):
            tail = exc.stderr_tail.strip().splitlines()[-3:]
            if tail and tail[-1] not in detail:
                detail += " | " + " | ".join(tail)
        error = f"Cloud Run task {self.index} ({self.describe()}) failed after {self.attempt + 1} attempt(s): {detail}"
        try:
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
                json.dump({"task": self.index, "error": error}, fh)
            self.out.put(self.spec.failed_key, Path(fh.name))
            os.unlink(fh.name)
        except Exception:  # the callback below is what matters
            log.exception("could not store the failed marker")
        self.callback({"status": "failed", "error": error[:3900], "metrics": self.metrics()})

    def callback(self, payload: dict[str, Any]) -> None:
        """POST the signed callback; retried on network errors and 5xx. Raises MprError when it cannot be delivered."""
        secret = self.settings.callback_secret
        if not secret:
            raise ConfigError("MPR_CALLBACK_SECRET is not set in the Cloud Run job: cannot sign the callback")
        last = ""
        for attempt in range(CALLBACK_TRIES):
            # a fresh nonce per send: a retry is a new signature, never mistaken for a replay
            # job_id binds the signed body to this job: MPR refuses it when posted to another job's URL
            body = json.dumps(
                {**payload, "job_id": self.spec.job_id, "nonce": uuid.uuid4().hex}, separators=(",", ":")
            ).encode()
            request = urllib.request.Request(
                self.spec.callback_url, data=body, method="POST", headers=callbacks.sign_headers(body, secret)
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    log.info(
                        "callback %s answered %s: %s",
                        payload["status"],
                        response.status,
                        response.read(500).decode(errors="replace"),
                    )
                    return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read(500).decode(errors='replace')}"
                if exc.code < 500:
                    raise MprError(f"callback to {self.spec.callback_url} was refused: {last}") from None
            except (TimeoutError, urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            time.sleep(min(2**attempt, 10))
        raise MprError(f"callback to {self.spec.callback_url} failed after {CALLBACK_TRIES} tries: {last}")


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def main(env: Mapping[str, str] | None = None) -> int:
    """Run this Cloud Run task; return the process exit code."""
    env = os.environ if env is None else env
    logging.basicConfig(
        level=env.get("MPR_LOG_LEVEL", "INFO").upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        index = _env_int(env, "CLOUD_RUN_TASK_INDEX", 0)
        count = _env_int(env, "CLOUD_RUN_TASK_COUNT", 1)
        attempt = _env_int(env, "CLOUD_RUN_TASK_ATTEMPT", 0)
        spec = TaskSpec.from_env(env)
        if count != spec.task_count or not 0 <= index < count:
            raise ConfigError(f"task {index} of {count}: the job's plan needs {spec.task_count} task(s)")
        runner = TaskRunner(spec, get_settings(), index, attempt, env.get("CLOUD_RUN_EXECUTION", ""))
    except Terminated:
        return EXIT_TERMINATED
    except MprError as exc:
        log.error("cannot start: %s", exc)
        return 2
    log.info("job %s task %d/%d (%s), attempt %d", spec.job_id, index, count, runner.role, attempt)
    try:
        runner.run()
        return 0
    except Terminated:
        log.warning("SIGTERM: task %d stopped (execution cancelled or timed out)", index)
        return EXIT_TERMINATED
    except PeerFailed as exc:
        # exit 0: a retry could not help, and the failed task already fails the execution
        log.warning("task %d stopped early: %s", index, exc)
        return 0
    except Exception as exc:
        log.error("task %d attempt %d failed: %s", index, attempt, exc, exc_info=not isinstance(exc, MprError))
        if attempt >= spec.max_retries:
            try:
                runner.report_failure(exc)
            except Terminated:
                return EXIT_TERMINATED
            except Exception:
                log.exception("could not report the failure")
        return 1


if __name__ == "__main__":
    sys.exit(main())
