"""The Lambda functions of the ``lambda`` executor, one per state of ``deploy/aws/statemachine.asl.json``.

``plan`` → (Map) ``encode_chunk`` → ``concat`` → ``callback``; any failure →
``failure``. ``plan`` and ``encode_chunk`` also report live chunk progress
(:func:`report`, best effort) to ``POST /api/jobs/{id}/chunks``. Each takes the payload the state machine builds (the execution
input is ``event["job"]``, see :func:`mpr_lambda.executor.execution_input`)
and returns JSON. They run the same chunker code as the local pipeline
(:mod:`mpr.chunker`), read and write media through :mod:`mpr_storage_s3`,
and keep within Lambda's limits: 900 s per call (chunk length is chosen so a
chunk finishes well within it), and /tmp (checked before downloading, always
emptied afterwards because warm containers keep it).

No step downloads the source: the plan (probe and keyframe scan), a video
chunk, the audio and a single-pass encode read a presigned URL of it
(:func:`source_input`) and fetch only the byte ranges they need (HTTP Range
requests after the input seek), so /tmp never holds it; a storage without
URLs falls back to a download. A trimmed job is chunked too: the plan
covers only the trim and every step gets the job's ``trim_start``/``trim_end``
(the execution input), so the output has the frames of a trimmed single pass.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mpr import callbacks, ffmpeg
from mpr.chunker import Chunk, encode_audio, placement
from mpr.chunker import concat as concat_chunks
from mpr.chunker import encode_chunk as encode_video_chunk
from mpr.chunker.encode import encode_whole
from mpr.chunker.plan import index_video, plan_from_index
from mpr.errors import FFmpegError, MprError, NotFound
from mpr.presets import SOURCE_CONTAINER, Preset
from mpr.settings import Settings
from mpr_lambda.settings import LambdaSettings

log = logging.getLogger("mpr_lambda")
log.setLevel(logging.INFO)


class StepFailed(Exception):
    """A step of the job failed; the message (shown to the user in MPR) says which and why."""


class SourceMissing(StepFailed):
    """The job's source object is not in the bucket."""


class TooBig(StepFailed):
    """The work does not fit Lambda's /tmp or timeout."""


class CallbackRejected(StepFailed):
    """MPR answered the callback with an error (bad signature, unknown job...)."""


# -- plumbing -------------------------------------------------------------------------------------


def _settings() -> tuple[Settings, LambdaSettings]:
    return Settings.from_env(), LambdaSettings.from_env()


_stores: dict[tuple[str, str | None, str | None], Any] = {}


def _storage(url: str) -> tuple[Any, str]:
    """The S3Storage of ``url``'s bucket and the object key inside it.

    Backends (and their boto3 clients) are kept for the life of the Lambda
    container, so a warm invocation does not build new clients.
    """
    from mpr_storage_s3.settings import S3Settings
    from mpr_storage_s3.storage import S3Storage, parse_root

    scheme, bucket, key = parse_root(url)
    settings = Settings.from_env()
    root = f"{scheme}://{bucket}/"
    cache_key = (root, settings.s3_endpoint_url, S3Settings.from_env().gs_endpoint_url)
    if cache_key not in _stores:
        _stores[cache_key] = S3Storage(root, settings)
    return _stores[cache_key], key.rstrip("/")


@contextmanager
def _scratch(ls: LambdaSettings) -> Iterator[Path]:
    """A private directory in /tmp, removed afterwards (a warm Lambda keeps /tmp between calls)."""
    Path(ls.tmp_dir).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="mpr-", dir=ls.tmp_dir))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _fetch(url: str, target_dir: Path, ls: LambdaSettings, budget_share: float = 0.45) -> Path:
    """Download ``url`` into ``target_dir`` after checking it fits the /tmp budget."""
    store, key = _storage(url)
    try:
        size = store.stat(key).size
    except NotFound:
        raise SourceMissing(f"source object {url} does not exist") from None
    if size > ls.tmp_bytes * budget_share:
        raise TooBig(
            f"{url} is {size / 1e6:.0f} MB; Lambda /tmp holds {ls.tmp_bytes / 1e6:.0f} MB "
            "(raise EphemeralStorage, MPR_LAMBDA_TMP_MB)"
        )
    return store.download(key, target_dir / Path(key).name)


SOURCE_URL_SECONDS = 3600
"""Lifetime of the presigned source URL a step reads (well beyond Lambda's 900 s limit)."""


def source_input(url: str, target_dir: Path, ls: LambdaSettings) -> str | Path:
    """What a step reads the source from: a presigned http(s) URL of ``url``, else a downloaded copy.

    With the URL ffmpeg and PyAV read only the byte ranges they need (and
    nothing lands in /tmp); a backend that gives no URL (or a non-http one)
    falls back to :func:`_fetch`. SourceMissing when the object does not exist.
    """
    store, key = _storage(url)
    try:
        store.stat(key)
    except NotFound:
        raise SourceMissing(f"source object {url} does not exist") from None
    signed = store.url(key, expires=SOURCE_URL_SECONDS)
    if signed and signed.startswith(("http://", "https://")):
        return signed
    return _fetch(url, target_dir, ls)


def trim_of(job: dict) -> tuple[float | None, float | None]:
    """The job's trim ``(start, end)`` in seconds of the source; a start of 0 is no start (as locally)."""
    start, end = job.get("trim_start"), job.get("trim_end")
    return (float(start) if start else None), (float(end) if end is not None else None)


def _ffmpeg_failure(what: str, exc: FFmpegError) -> StepFailed:
    tail = "\n".join((exc.stderr_tail or "").strip().splitlines()[-8:])
    return StepFailed(f"{what} failed: {exc}" + (f"\nffmpeg: {tail}" if tail and tail not in str(exc) else ""))


def _step(fn: Callable[[dict, Any], dict]) -> Callable[[dict, Any], dict]:
    """Log the step and turn MPR errors into StepFailed (its message reaches the user through ``failure``)."""

    @functools.wraps(fn)
    def wrapper(event: dict, context: Any = None) -> dict:
        job_id = (event.get("job") or event).get("job_id", "?")
        started = time.monotonic()
        log.info("mpr %s job=%s", fn.__name__, job_id)
        try:
            return fn(event, context)
        except StepFailed:
            raise
        except FFmpegError as exc:
            raise _ffmpeg_failure(fn.__name__.replace("_", " "), exc) from exc
        except MprError as exc:
            raise StepFailed(f"{fn.__name__.replace('_', ' ')} failed: {exc}") from exc
        finally:
            log.info("mpr %s job=%s took %.1fs", fn.__name__, job_id, time.monotonic() - started)

    return wrapper


def chunk_seconds_for(requested: float, duration: float, ls: LambdaSettings) -> float:
    """The chunk length to plan: as asked, but short enough to encode in half the Lambda timeout.

    At the slowest speed we plan for (``MPR_LAMBDA_MIN_SPEED`` x realtime) a
    chunk of ``timeout * 0.5 * min_speed`` seconds takes half the timeout;
    with the defaults (900 s, 0.5x) that is 225 s. Longer sources get longer
    chunks only to stay under ``MPR_LAMBDA_MAX_CHUNKS``.
    """
    limit = ls.timeout * 0.5 * ls.min_speed
    seconds = max(0.5, min(float(requested or 10.0), limit))
    if duration / seconds > ls.max_chunks:
        seconds = duration / ls.max_chunks
        if seconds > limit:
            raise TooBig(
                f"a {duration:.0f} s source needs chunks of {seconds:.0f} s to stay within {ls.max_chunks} chunks, "
                f"longer than the {limit:.0f} s a chunk may take on Lambda"
            )
    return seconds


def _job(event: dict) -> dict:
    return event.get("job", event)


def _work_url(job: dict, name: str) -> str:
    return job["work_url"].rstrip("/") + "/" + name


def chunk_object_name(chunk: Chunk, ext: str) -> str:
    """The work object of a video chunk: named by index *and* span (ms), so a retried job whose plan changed
    (other chunk length) never reuses an earlier run's chunk of another span as its own."""
    return f"chunk_{chunk.index:05d}_{round(chunk.start * 1000)}-{round(chunk.end * 1000)}.{ext}"


# -- the steps ------------------------------------------------------------------------------------


@_step
def plan(event: dict, context: Any = None) -> dict:
    """Plan step. Input: the execution input. Output: ``{"items": [...], "info": {...}}``.

    Items are video chunks (``{"kind": "video", "index", "start", "end",
    "frames", "count"}``, count being the number of video chunks), one
    ``{"kind": "audio"}`` (the audio track, encoded once), or a single ``{"kind": "whole"}`` when the job cannot be chunked (stream
    copy, audio-only source, no video encoder, a trim with a preset that
    changes the frame rate). A trimmed job's chunks cover only the trim.
    """
    job = _job(event)
    _, ls = _settings()
    preset = Preset.from_dict(job["preset"])
    ext = ffmpeg.output_extension(preset, job["source_url"])
    with _scratch(ls) as tmp:
        source = source_input(job["source_url"], tmp, ls)
        idx = index_video(source)
        has_audio = _has_audio(source)
        duration = (idx.end_us - idx.frame_us[0]) / 1e6 if idx else _duration(source)
        trim_start, trim_end = trim_of(job)
        trimmed = trim_start is not None or trim_end is not None
        chunkable = (
            idx is not None and preset.video_codec not in (None, "copy") and preset.container != SOURCE_CONTAINER
        )
        # a frame rate change cannot be cut mid-trim like one pass does (see mpr.chunker.encode.chunk_command)
        chunkable = chunkable and not (trimmed and preset.fps)
        if isinstance(source, Path):
            size = source.stat().st_size
        else:
            store, key = _storage(job["source_url"])
            size = store.stat(key).size
        info: dict[str, Any] = {"ext": ext, "duration": duration, "source_size": size}
        if not chunkable:
            if preset.video_codec not in (None, "copy") and idx is not None:
                span = (job.get("trim_end") or duration) - (job.get("trim_start") or 0.0)
                if span > ls.timeout * ls.min_speed:
                    raise TooBig(f"a {span:.0f} s single-pass encode may not finish within Lambda's {ls.timeout:.0f} s")
            info.update(mode="whole", chunk_seconds=None, video_start=0.0)
            return {"items": [{"kind": "whole"}], "info": info}
        span = min(trim_end if trim_end is not None else duration, duration) - (trim_start or 0.0)
        seconds = chunk_seconds_for(float(job.get("chunk_seconds") or 10.0), max(span, 0.0), ls)
        try:
            chunks = plan_from_index(idx, seconds, start=trim_start, end=trim_end)
        except ValueError as exc:  # a trim that holds no video frame
            raise StepFailed(f"plan failed: {exc}") from None
        longest = max(c.duration for c in chunks)
        if longest > ls.timeout * ls.min_speed:
            raise TooBig(
                f"the source's keyframes are {longest:.0f} s apart: one chunk would not finish within Lambda's "
                f"{ls.timeout:.0f} s (re-encode it with a shorter GOP first)"
            )
        video_start = max(0.0, idx.frame_us[0] / 1e6) if chunks and chunks[0].start == 0 else 0.0
        # count: the encoder's reports carry it, so MPR can count progress even if the plan report is lost
        items: list[dict[str, Any]] = [{"kind": "video", **c.to_dict(), "count": len(chunks)} for c in chunks]
        if preset.audio_codec is not None and has_audio:
            items.append({"kind": "audio"})
        info.update(
            mode="chunked",
            chunk_seconds=seconds,
            video_start=video_start,
            total=sum(c.duration for c in chunks),
            trimmed=trimmed,
        )
        log.info("job %s: %d chunks of ~%.1fs", job["job_id"], len(chunks), seconds)
        report(job, {"type": "plan", "chunks": [{"index": c.index, "start": c.start, "end": c.end} for c in chunks]})
        return {"items": items, "info": info}


def _has_audio(path: str | Path) -> bool:
    import av

    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except (av.FFmpegError, OSError):
        return False


def _duration(path: str | Path) -> float:
    import av

    try:
        with av.open(str(path)) as container:
            return (container.duration or 0) / 1_000_000
    except (av.FFmpegError, OSError):
        return 0.0


@_step
def encode_chunk(event: dict, context: Any = None) -> dict:
    """Encode step (one Map iteration). Input: ``{"job": ..., "item": ...}``. Output: where the result went.

    Idempotent: a retried iteration whose object already exists (S3 puts are
    atomic, so it is complete) is not encoded again. A video chunk, the audio
    and a whole-file encode all read the source through a presigned URL
    (:func:`source_input`). The job's trim applies to all three. A video chunk reports
    ``started`` and ``done``/``failed`` to MPR (:func:`report`, best effort),
    as worker the Lambda request id, as attempt the state's retry count + 1,
    with the chunk's start, end and the plan's chunk count (MPR makes the row
    from them if the plan report was lost).
    """
    job, item = _job(event), event["item"]
    _, ls = _settings()
    preset = Preset.from_dict(job["preset"])
    ext = ffmpeg.output_extension(preset, job["source_url"])
    kind = item.get("kind", "video")
    if kind == "video":
        chunk = Chunk.from_dict(item)
        name, what = (
            chunk_object_name(chunk, ext),
            f"encode chunk {chunk.index} ({chunk.start:.3f}-{chunk.end:.3f} s)",
        )
    elif kind == "audio":
        chunk, name, what = None, f"audio.{ext}", "encode audio"
    elif kind == "whole":
        chunk, name, what = None, f"whole.{ext}", "encode"
    else:
        raise StepFailed(f"unknown plan item kind {kind!r}")
    url = _work_url(job, name)
    store, key = _storage(url)
    result = {"kind": kind, "index": chunk.index if chunk else -1, "url": url}
    if chunk:
        result["duration"] = chunk.duration
    progress: dict[str, Any] = {
        "index": result["index"],
        "worker": str(getattr(context, "aws_request_id", None) or "lambda"),
        "attempt": int(event.get("retry") or 0) + 1,
    }
    if chunk:  # what MPR needs to make the chunk's row when the plan report never arrived
        progress.update(start=chunk.start, end=chunk.end)
        if item.get("count"):
            progress["count"] = int(item["count"])
    if store.exists(key):
        log.info("%s: already done by an earlier attempt", what)
        if chunk:
            report(job, {"type": "done", **progress, "output_key": url})
        return {**result, "size": store.stat(key).size, "reused": True}
    if chunk:
        report(job, {"type": "started", **progress})
    try:
        with _scratch(ls) as tmp:
            trim_start, trim_end = trim_of(job)
            source = source_input(job["source_url"], tmp, ls)
            out = tmp / name
            started = time.monotonic()
            try:
                if kind == "video":
                    encode_video_chunk(source, chunk, preset, out, trim_start=trim_start, trim_end=trim_end)
                elif kind == "audio":
                    encode_audio(source, preset, out, start=trim_start, end=trim_end)
                else:
                    encode_whole(source, preset, out, start=trim_start, end=trim_end)
            except FFmpegError as exc:
                raise _ffmpeg_failure(what, exc) from exc
            seconds = time.monotonic() - started
            info = store.put(key, out)
    except Exception as exc:
        if chunk:
            report(job, {"type": "failed", **progress, "error": str(exc)[:4000]})
        raise
    if chunk:
        report(job, {"type": "done", **progress, "output_key": url, "seconds": round(seconds, 3)})
    return {**result, "size": info.size, "seconds": round(seconds, 3), "reused": False}


@_step
def concat(event: dict, context: Any = None) -> dict:
    """Concat step. Input: ``{"job", "plan", "encoded"}``. Output: ``{"output_key", "size", ...}``.

    Joins the video chunks in order with the audio (stream copy, no
    re-encode) and the subtitles of the source (read from its presigned URL,
    :func:`source_input`), uploads the output (multipart when large), deletes the
    chunk objects. A trimmed job's chunks are placed where they start
    (:func:`mpr.chunker.placement`), as the local pipeline does.
    """
    job, plan_out, encoded = _job(event), event["plan"], event["encoded"]
    _, ls = _settings()
    preset = Preset.from_dict(job["preset"])
    info = plan_out.get("info", {})
    out_store, out_key = _storage(job["output_url"])
    videos = sorted((e for e in encoded if e["kind"] == "video"), key=lambda e: e["index"])
    audio = next((e for e in encoded if e["kind"] == "audio"), None)
    whole = next((e for e in encoded if e["kind"] == "whole"), None)
    needed = sum(int(e.get("size") or 0) for e in encoded) * 2
    if needed > ls.tmp_bytes * 0.9:
        raise TooBig(f"concat needs about {needed / 1e6:.0f} MB of /tmp, Lambda has {ls.tmp_bytes / 1e6:.0f} MB")
    started = time.monotonic()
    with _scratch(ls) as tmp:
        if whole:
            local = _fetch(whole["url"], tmp, ls, budget_share=0.9)
        else:
            if not videos:
                raise StepFailed("concat failed: the plan produced no video chunks")
            paths = [_fetch(e["url"], tmp, ls, budget_share=0.9) for e in videos]
            audio_path = _fetch(audio["url"], tmp, ls, budget_share=0.9) if audio else None
            local = tmp / ("output." + info.get("ext", Path(out_key).suffix.lstrip(".") or "mp4"))
            durations = [float(e["duration"]) for e in videos]
            video_start = float(info.get("video_start") or 0.0)
            trim_start, trim_end = trim_of(job)
            try:
                if info.get("trimmed"):
                    durations, video_start = placement(paths)
                concat_chunks(
                    paths,
                    audio_path,
                    local,
                    preset,
                    durations=durations,
                    video_start=video_start,
                    total=info.get("total"),
                    source=source_input(job["source_url"], tmp, ls),  # its subtitles (the single pass's)
                    trim_start=trim_start,
                    trim_end=trim_end,
                )
            except FFmpegError as exc:
                raise _ffmpeg_failure("concat", exc) from exc
        stored = out_store.put(out_key, local)
    for e in encoded:
        store, key = _storage(e["url"])
        store.delete(key)
    return {
        "output_key": job["output_key"],
        "output_url": job["output_url"],
        "size": stored.size,
        "chunks": len(videos),
        "concat_seconds": round(time.monotonic() - started, 3),
        "encode_seconds": round(sum(float(e.get("seconds") or 0) for e in encoded), 3),
    }


# -- callbacks ------------------------------------------------------------------------------------

_secret_cache: dict[str, str] = {}


def callback_secret(ls: LambdaSettings | None = None) -> str:
    """The callback secret: ``MPR_CALLBACK_SECRET`` or the SSM parameter ``MPR_LAMBDA_CALLBACK_SECRET_PARAM``."""
    ls = ls or LambdaSettings.from_env()
    if ls.callback_secret:
        return ls.callback_secret
    if ls.callback_secret_param:
        if ls.callback_secret_param not in _secret_cache:
            import boto3

            ssm = boto3.client("ssm")
            value = ssm.get_parameter(Name=ls.callback_secret_param, WithDecryption=True)["Parameter"]["Value"]
            _secret_cache[ls.callback_secret_param] = value
        return _secret_cache[ls.callback_secret_param]
    raise StepFailed("no callback secret: set MPR_CALLBACK_SECRET or MPR_LAMBDA_CALLBACK_SECRET_PARAM on the Lambda")


def post_callback(
    url: str, body: dict[str, Any], ls: LambdaSettings | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """POST ``body`` to ``url``, signed (:func:`mpr.callbacks.sign_headers`); raise CallbackRejected on non-2xx."""
    ls = ls or LambdaSettings.from_env()
    if not url.startswith(("http://", "https://")):
        raise CallbackRejected(f"callback URL must be http(s), got {url!r}")
    # a nonce: a retried step (or a retried job's Plan) sending the same body within the same second is a
    # new delivery for MPR to apply idempotently, not a replay of the earlier signature it must refuse
    data = json.dumps({**body, "nonce": uuid.uuid4().hex}, separators=(",", ":"), sort_keys=True).encode()
    headers = callbacks.sign_headers(data, callback_secret(ls))
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout or ls.callback_timeout) as response:
            text = response.read().decode("utf-8", "replace")
            status = response.status
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise CallbackRejected(f"MPR rejected the callback to {url}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CallbackRejected(f"could not reach MPR at {url}: {exc}") from None
    try:
        answer = json.loads(text)
    except ValueError:
        answer = {"raw": text[:300]}
    return {"status_code": status, "response": answer}


def progress_url(job: dict) -> str:
    """Where chunk progress reports go: ``/api/jobs/{id}/chunks`` beside the job's callback URL."""
    url = job["callback_url"]
    return (url[: -len("/callback")] if url.endswith("/callback") else url.rstrip("/")) + "/chunks"


def report(job: dict, body: dict[str, Any], ls: LambdaSettings | None = None) -> bool:
    """Send a chunk progress report (``plan``/``started``/``done``/``failed``) to MPR; True when accepted.

    Best effort: progress is for people watching, so a report that cannot be
    signed, delivered or is refused is logged and the step carries on. The
    body carries the job id and ``run`` (the job attempt of this execution);
    MPR's rules for it are in :mod:`mpr.api.callback`.
    """
    try:
        ls = ls or LambdaSettings.from_env()
        if not ls.progress_timeout or not job.get("callback_url"):
            return False
        payload = {"job_id": job["job_id"], "run": int(job.get("attempt") or 0), **body}
        post_callback(progress_url(job), payload, ls, timeout=ls.progress_timeout)
        return True
    except Exception as exc:  # never fail (or slow down much) the encode because of a progress report
        log.warning("job %s: %s report not delivered: %s", job.get("job_id"), body.get("type"), exc)
        return False


def callback(event: dict, context: Any = None) -> dict:
    """Success step: tell MPR the job is COMPLETED, with the output key and metrics."""
    job, result = _job(event), event.get("result") or {}
    body = {
        "job_id": job["job_id"],
        "status": "completed",
        "output_key": result.get("output_key") or job["output_key"],
        "metrics": {
            "execution": event.get("execution"),
            "size": result.get("size"),
            "chunks": result.get("chunks"),
            "encode_seconds": result.get("encode_seconds"),
            "concat_seconds": result.get("concat_seconds"),
        },
    }
    return post_callback(job["callback_url"], body)


def error_message(error: dict[str, Any] | None) -> str:
    """A readable message from a Step Functions Catch result ``{"Error", "Cause"}``."""
    if not error:
        return "the Step Functions execution failed"
    name, cause = error.get("Error") or "Error", error.get("Cause") or ""
    try:
        parsed = json.loads(cause)
    except (TypeError, ValueError):
        parsed = None
    if isinstance(parsed, dict) and parsed.get("errorMessage"):
        return str(parsed["errorMessage"])
    return f"{name}: {cause}" if cause else name


def failure(event: dict, context: Any = None) -> dict:
    """Failure step (the Catch target): tell MPR the job FAILED, with the failing step's error."""
    job = _job(event)
    body = {
        "job_id": job["job_id"],
        "status": "failed",
        "error": error_message(event.get("error"))[:4000],
        "metrics": {"execution": event.get("execution"), "error_type": (event.get("error") or {}).get("Error")},
    }
    return post_callback(job["callback_url"], body)


__all__ = [
    "callback",
    "chunk_seconds_for",
    "concat",
    "encode_chunk",
    "failure",
    "plan",
    "post_callback",
    "progress_url",
    "report",
    "source_input",
    "trim_of",
]
