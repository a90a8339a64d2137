"""The business logic the API, the admin and the CLI call. Handlers stay thin; rules live here.

Every function raises :class:`~mpr.errors.MprError` subclasses with messages
safe to show to a user (NotFound, ValidationError, InvalidTransition,
PluginError, ExecutorError).
"""

from __future__ import annotations

import asyncio
import logging
import math
import posixpath
import re
import shutil
import unicodedata
import uuid
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from mpr import jobs
from mpr.errors import ExecutorError, InvalidTransition, MprError, NotFound, ValidationError
from mpr.executors import get_executor
from mpr.ffmpeg import available_encoders, output_extension
from mpr.models import (
    FINAL_STATUSES,
    AssetKind,
    AssetStatus,
    JobChunk,
    JobStatus,
    MediaAsset,
    TranscodeJob,
    TranscodePreset,
)
from mpr.presets import PRESET_FIELDS, USER_SOURCE, Preset, preset_from_model, source_name, validate_preset
from mpr.scan import ScanResult
from mpr.scan import scan as _scan
from mpr.settings import get_settings
from mpr.storage import key_within, media_in, media_out, safe_key

log = logging.getLogger(__name__)

INLINE_EXECUTOR = "inline"  # jobs run in the foreground by ``mpr transcode``
TRIM_TOLERANCE = 0.05  # seconds a trim end may pass the probed duration (rounding of UI values)
MAX_COMMENTS = 10_000
OUTPUT_NAME_BYTES = 200  # UTF-8 bytes of an outputName: a file name may have 255, with room for "-N.ext"
_OUTPUT_NAME_PUNCTUATION = frozenset(" ._+()-")

__all__ = [
    "ScanResult",
    "cancel_job",
    "copy_preset",
    "create_job",
    "create_preset",
    "delete_asset",
    "delete_job",
    "delete_preset",
    "get_asset",
    "get_preset",
    "reset_preset",
    "retry_job",
    "scan",
    "update_asset",
    "update_preset",
]


def _uuid(value: str | uuid.UUID, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValidationError(f"{value!r} is not a valid {what} id (expected a UUID)") from None


async def scan() -> ScanResult:
    """Register new media files under MEDIA_IN (see :mod:`mpr.scan`)."""
    return await _scan()


async def get_asset(asset_id: str | uuid.UUID) -> MediaAsset:
    """The asset with ``asset_id``, or NotFound."""
    asset = await MediaAsset.get_or_none(id=_uuid(asset_id, "asset"))
    if asset is None:
        raise NotFound(f"asset {asset_id} does not exist")
    return asset


async def get_preset(preset_id_or_name: str | uuid.UUID) -> TranscodePreset:
    """The preset with this id or name, or NotFound."""
    preset = None
    if isinstance(preset_id_or_name, uuid.UUID):
        preset = await TranscodePreset.get_or_none(id=preset_id_or_name)
    else:
        try:
            preset = await TranscodePreset.get_or_none(id=uuid.UUID(str(preset_id_or_name)))
        except ValueError:
            preset = None
        if preset is None:
            preset = await TranscodePreset.get_or_none(name=str(preset_id_or_name))
    if preset is None:
        raise NotFound(f"preset {preset_id_or_name} does not exist")
    return preset


def copy_preset() -> Preset:
    """The stream-copy recipe used when a job has no preset (pure trim/remux)."""
    return Preset(
        name="copy",
        container="source",
        description="Stream copy: trim or remux without re-encoding",
        video_codec="copy",
        audio_codec="copy",
    )


def _number(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValidationError(f"{name} must be a number of seconds")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(number):
        raise ValidationError(f"{name} must be a finite number of seconds")
    return number


def validate_trim(start: Any, end: Any, duration: float | None) -> tuple[float | None, float | None]:
    """Check trim times against the source duration; returns (start, end) with 0 start as None."""
    start_s, end_s = _number(start, "trim start"), _number(end, "trim end")
    if start_s is not None and start_s < 0:
        raise ValidationError(f"trim start must be >= 0, got {start_s:g}")
    if end_s is not None and end_s <= 0:
        raise ValidationError(f"trim end must be > 0, got {end_s:g}")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ValidationError(f"trim end ({end_s:g} s) must be after trim start ({start_s:g} s)")
    if duration:
        if start_s is not None and start_s >= duration:
            raise ValidationError(f"trim start ({start_s:g} s) is at or past the end of the media ({duration:g} s)")
        if end_s is not None and end_s > duration + TRIM_TOLERANCE:
            raise ValidationError(f"trim end ({end_s:g} s) is past the end of the media ({duration:g} s)")
        if end_s is not None and end_s >= duration:
            end_s = None  # "to the end"
    return (start_s or None), end_s


def _name_char(c: str) -> bool:
    # combining marks (Mn, Mc) too: Devanagari or Thai words need them after their letters
    return c.isalnum() or c in _OUTPUT_NAME_PUNCTUATION or unicodedata.category(c) in ("Mn", "Mc")


def valid_output_name(name: str) -> bool:
    """Whether ``name`` is a usable ``outputName``: letters and digits of any script (``str.isalnum``, with
    their combining marks), space and ``. _ + ( ) -``, starting with a letter or digit, no ``..``, at most
    :data:`OUTPUT_NAME_BYTES` bytes of UTF-8. Path separators, control and other characters are refused,
    so a name never leaves its folder."""
    return (
        bool(name)
        and name[0].isalnum()
        and all(_name_char(c) for c in name)
        and ".." not in name
        and len(name.encode("utf-8", "surrogatepass")) <= OUTPUT_NAME_BYTES
    )


def _output_stem(asset_path: str, preset_name: str, output_name: str | None) -> str:
    directory = posixpath.dirname(asset_path)
    if output_name:
        name = unicodedata.normalize("NFC", output_name.strip())
        if not valid_output_name(name):
            raise ValidationError(
                "output name may use letters and digits (any script), space and . _ + ( ) -, starting with a "
                f"letter or digit (no folders, no '..'), up to {OUTPUT_NAME_BYTES} bytes"
            )
        stem = name
        directory = ""
    else:
        base = posixpath.splitext(posixpath.basename(asset_path))[0]
        slug = re.sub(r"[^A-Za-z0-9._+-]+", "-", preset_name).strip("-") or "out"
        stem = f"{base}_{slug}"
    return posixpath.join(directory, stem) if directory else stem


async def _unique_output(stem: str, ext: str) -> str:
    """An output key under MEDIA_OUT that no job uses and no file occupies: stem.ext, stem-1.ext, ..."""
    # the user's extension is replaced by the preset's container
    if stem.lower().endswith("." + ext):
        stem = stem[: -len(ext) - 1]
    storage = media_out()
    for n in range(10_000):
        key = safe_key(f"{stem}.{ext}" if n == 0 else f"{stem}-{n}.{ext}")
        if await TranscodeJob.exists(output_path=key):
            continue
        if await asyncio.to_thread(storage.exists, key):
            continue
        return key
    raise ValidationError(f"no free output name for {stem}.{ext}")


async def create_job(
    source_asset_id: str | uuid.UUID,
    preset_id: str | uuid.UUID | None = None,
    *,
    trim_start: float | None = None,
    trim_end: float | None = None,
    output_name: str | None = None,
    priority: int = 0,
    chunked: bool = False,
    chunk_seconds: float | None = None,
    chunk_workers: int | None = None,
    executor: str | None = None,
    submit: bool = True,
) -> TranscodeJob:
    """Validate and create a PENDING job, then hand it to its executor.

    ``preset_id`` None means stream copy (trim/remux). The output path is
    unique in MEDIA_OUT and never overwrites a file. ``submit=False`` (with
    ``executor="inline"``) leaves the job for the caller to run, as
    ``mpr transcode`` does. If the executor refuses the job, the job is
    marked FAILED and ExecutorError is raised.
    """
    settings = get_settings()
    asset = await get_asset(source_asset_id)
    if asset.status is AssetStatus.MISSING:
        raise ValidationError(
            f"the source file {asset.path} is missing from MEDIA_IN (a scan no longer found it); "
            "put it back and scan again"
        )
    if asset.status is not AssetStatus.READY:
        reason = f": {asset.error}" if asset.error else ""
        raise ValidationError(f"asset {asset.path} is not ready ({asset.status.value}{reason})")
    if not await asyncio.to_thread(media_in().exists, asset.path):
        raise ValidationError(f"the source file {asset.path} no longer exists in MEDIA_IN")

    preset_row = await get_preset(preset_id) if preset_id is not None else None
    preset = preset_from_model(preset_row) if preset_row is not None else copy_preset()
    if asset.kind is AssetKind.AUDIO and preset.video_codec not in (None, "copy"):
        raise ValidationError(f"preset {preset.name} encodes video but {asset.filename} has no video stream")
    if preset.video_codec is None and not _has_audio(asset):
        raise ValidationError(
            f"preset {preset.name} is audio-only but {asset.filename} has no audio track: nothing to write"
        )

    start, end = validate_trim(trim_start, trim_end, asset.duration)
    try:
        priority = int(priority or 0)
    except (TypeError, ValueError):
        raise ValidationError(f"priority must be an integer, got {priority!r}") from None
    if not -1000 <= priority <= 1000:
        raise ValidationError("priority must be from -1000 to 1000")

    if chunked:
        if asset.kind is not AssetKind.VIDEO or preset.video_codec in (None, "copy"):
            raise ValidationError("chunked jobs need a video source and a preset that encodes video")
        seconds = _number(chunk_seconds, "chunk seconds")
        if seconds is not None and not 0.5 <= seconds <= 3600:
            raise ValidationError("chunk seconds must be from 0.5 to 3600")
        chunk_seconds = seconds or settings.chunk_seconds
        if chunk_workers is not None:
            try:
                chunk_workers = int(chunk_workers)
            except (TypeError, ValueError):
                raise ValidationError(f"chunk workers must be an integer, got {chunk_workers!r}") from None
            if not 1 <= chunk_workers <= 64:
                raise ValidationError("chunk workers must be from 1 to 64")
    else:
        chunk_seconds, chunk_workers = None, None

    executor = executor or settings.executor
    if submit:
        get_executor(executor)  # PluginError naming the package to install, before any row exists
    if chunked and (start is not None or end is not None) and not _chunks_trims(executor):
        raise ValidationError(
            f"the {executor} executor cannot run a trimmed chunked job; "
            "trim without chunking, or use the local executor"
        )

    ext = output_extension(preset, asset.path)
    stem = _output_stem(asset.path, preset.name, output_name)
    job = None
    for _attempt in range(5):
        output = await _unique_output(stem, ext)
        try:
            job = await TranscodeJob.create(
                source_asset=asset,
                source_path=asset.path,
                preset=preset_row,
                preset_snapshot=preset.to_dict(),
                output_path=output,
                trim_start=start,
                trim_end=end,
                priority=priority,
                executor=executor,
                status=JobStatus.PENDING,
                chunked=bool(chunked),
                chunk_seconds=chunk_seconds,
                chunk_workers=chunk_workers,
            )
            break
        except IntegrityError:
            continue  # another job took this output name a moment ago
    if job is None:
        raise ValidationError(f"could not reserve an output name for {stem}.{ext}")
    if submit:
        await _submit(job)
        job = await TranscodeJob.get(id=job.id)
    return job


def _has_audio(asset: MediaAsset) -> bool:
    """Whether the asset's probe found an audio track (its ``audio_codec``, or an audio stream in ``probe``)."""
    streams = (asset.probe or {}).get("streams") or []
    return bool(asset.audio_codec) or any(isinstance(s, dict) and s.get("type") == "audio" for s in streams)


def _chunks_trims(executor: str) -> bool:
    """True when ``executor`` runs trimmed chunked jobs in chunks (its class sets ``chunked_trim = True``)."""
    if executor == INLINE_EXECUTOR:
        return True  # mpr transcode runs the local chunker
    return bool(getattr(get_executor(executor), "chunked_trim", False))


async def _submit(job: TranscodeJob) -> None:
    """Hand ``job`` to its executor; on refusal mark it FAILED and raise ExecutorError."""
    try:
        external_id = await get_executor(job.executor).submit(job)
    except Exception as exc:
        message = str(exc) if isinstance(exc, MprError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, MprError):
            log.exception("executor %s failed to submit job %s", job.executor, job.id)
        try:
            await jobs.transition(job.id, JobStatus.FAILED, error=f"could not submit to {job.executor}: {message}")
        except MprError:
            pass
        raise ExecutorError(f"executor {job.executor} could not take the job: {message}") from exc
    if external_id:
        await TranscodeJob.filter(id=job.id).update(external_id=str(external_id))


async def cancel_job(job_id: str | uuid.UUID) -> TranscodeJob:
    """Cancel a PENDING or PROCESSING job and tell its executor (a running ffmpeg is killed)."""
    job = await jobs.transition(job_id, JobStatus.CANCELLED, message="cancelled by user")
    if job.executor != INLINE_EXECUTOR:
        try:
            await get_executor(job.executor).cancel(job)
        except MprError as exc:
            log.warning("executor %s could not cancel job %s: %s", job.executor, job.id, exc)
        except Exception:
            log.exception("executor %s failed to cancel job %s", job.executor, job.id)
    return await TranscodeJob.get(id=job.id)


async def retry_job(job_id: str | uuid.UUID) -> TranscodeJob:
    """Put a FAILED or CANCELLED job back to PENDING and submit it again.

    Chunked jobs keep their finished chunks; only the others run again.
    """
    job = await jobs.get_job(job_id)
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise InvalidTransition(f"job {job.id} is {job.status.value}; only failed or cancelled jobs can be retried")
    if job.source_asset_id is None:  # type: ignore[attr-defined]
        raise ValidationError("the job's source asset was deleted; create a new job instead")
    executor = job.executor
    if executor == INLINE_EXECUTOR:
        executor = get_settings().executor
    get_executor(executor)
    job = await jobs.transition(
        job.id,
        JobStatus.PENDING,
        message="retry",
        progress=0.0,
        speed=None,
        eta=None,
        external_id=None,
        executor=executor,
        worker=None,
    )
    await _submit(job)
    return await TranscodeJob.get(id=job.id)


async def delete_job(job_id: str | uuid.UUID, *, delete_output: bool = False) -> None:
    """Delete a finished (completed, failed or cancelled) job with its chunks and work files.

    A pending or running job is refused (cancel it first). With
    ``delete_output`` the job's output file is removed from MEDIA_OUT through
    the storage backend (a file already gone is fine). Files are removed
    before the rows, so a storage error leaves the job in place to try again.
    """
    job = await jobs.get_job(job_id)
    if job.status not in FINAL_STATUSES:
        raise InvalidTransition(f"job {job.id} is {job.status.value}; cancel it first, then delete it")
    if delete_output:
        # safe_key refuses a stored path that would leave MEDIA_OUT; the backend checks symlinks too
        key = safe_key(job.output_path)
        if job.status is not JobStatus.COMPLETED and (source := await asyncio.to_thread(_source_at, key)):
            # a job that never completed wrote nothing there: with MEDIA_OUT overlapping MEDIA_IN, the
            # file under its reserved name can be a source uploaded or scanned meanwhile
            raise ValidationError(
                f"{key} in MEDIA_OUT is {source} in MEDIA_IN, not this {job.status.value} "
                "job's output; it is not deleted (delete the job without its output)"
            )
        await asyncio.to_thread(media_out().delete, key)
    await _discard_work(job)
    async with in_transaction():
        # conditional: a retry that moved the job back to PENDING meanwhile wins
        deleted = await TranscodeJob.filter(id=job.id, status__in=list(FINAL_STATUSES)).delete()
        if not deleted:
            raise InvalidTransition(f"job {job.id} changed meanwhile (retried?); try again")
        await JobChunk.filter(job_id=job.id).delete()


def _source_at(out_key: str) -> str | None:
    """The MEDIA_IN key of the existing file MEDIA_OUT ``out_key`` names, when the roots overlap.

    Folders and buckets alike: a local path resolved through symlinks, or the
    same bucket with MEDIA_OUT's prefix inside (or equal to) MEDIA_IN's.
    """
    source = media_in()
    key = key_within(source, media_out(), out_key)
    return key if key is not None and source.exists(key) else None


async def _discard_work(job: TranscodeJob) -> None:
    """Remove the chunk files a job kept for a retry: the local chunker's folder, and the executor's own."""
    from mpr.chunker.pipeline import work_dir_for

    await asyncio.to_thread(shutil.rmtree, work_dir_for(str(job.id)), True)
    if job.executor == INLINE_EXECUTOR:
        return
    try:
        discard = getattr(get_executor(job.executor), "discard", None)
    except MprError:
        return  # the executor's plugin is gone: nothing of it can be cleaned up
    if discard is not None:
        try:
            await discard(job)
        except MprError as exc:
            log.warning("executor %s could not remove work files of job %s: %s", job.executor, job.id, exc)


async def update_asset(asset_id: str | uuid.UUID, comments: str | None) -> MediaAsset:
    """Set an asset's comments."""
    asset = await get_asset(asset_id)
    comments = comments or ""
    if not isinstance(comments, str) or len(comments) > MAX_COMMENTS:
        raise ValidationError(f"comments must be text of at most {MAX_COMMENTS} characters")
    asset.comments = comments
    await asset.save(update_fields=["comments", "updated_at"])
    return asset


async def delete_asset(asset_id: str | uuid.UUID) -> None:
    """Remove an asset from the library (the file in MEDIA_IN stays; a scan registers it again).

    Refused while a job of the asset is pending or processing. Finished jobs
    keep their outputs and their ``source_path``.
    """
    asset = await get_asset(asset_id)
    active = await TranscodeJob.filter(
        source_asset_id=asset.id, status__in=[JobStatus.PENDING, JobStatus.PROCESSING]
    ).count()
    if active:
        raise ValidationError(f"{asset.filename} has {active} pending or running job(s); cancel them first")
    await asset.delete()


def _preset_values(data: dict[str, Any]) -> dict[str, Any]:
    unknown = set(data) - set(PRESET_FIELDS)
    if unknown:
        raise ValidationError(f"unknown preset field(s): {', '.join(sorted(unknown))}")
    return dict(data)


async def _validated(data: dict[str, Any]) -> Preset:
    encoders = await asyncio.to_thread(available_encoders)
    return validate_preset(data, encoders=encoders or None)


async def create_preset(data: dict[str, Any]) -> TranscodePreset:
    """Create a user preset from ``data`` (Preset field names); every field is validated."""
    preset = await _validated(_preset_values(data))
    if await TranscodePreset.exists(name=preset.name):
        raise ValidationError(f"a preset named {preset.name!r} already exists")
    values = preset.to_dict()
    try:
        return await TranscodePreset.create(source=USER_SOURCE, modified=False, **values)
    except IntegrityError:
        raise ValidationError(f"a preset named {preset.name!r} already exists") from None


async def update_preset(preset_id: str | uuid.UUID, data: dict[str, Any]) -> TranscodePreset:
    """Change some fields of a preset. Editing a built-in or plugin preset marks it ``modified``,
    so plugin upgrades never overwrite the user's change."""
    row = await get_preset(_uuid(preset_id, "preset"))
    merged = preset_from_model(row).to_dict()
    merged.update(_preset_values(data))
    preset = await _validated(merged)
    if preset.name != row.name and await TranscodePreset.exists(name=preset.name):
        raise ValidationError(f"a preset named {preset.name!r} already exists")
    values = preset.to_dict()
    if row.source != USER_SOURCE:
        values["modified"] = True
    try:
        await TranscodePreset.filter(id=row.id).update(**values)
    except IntegrityError:
        raise ValidationError(f"a preset named {preset.name!r} already exists") from None
    return await TranscodePreset.get(id=row.id)


async def delete_preset(preset_id: str | uuid.UUID) -> None:
    """Delete a user preset. Built-in and plugin presets are protected (edit them instead).

    Jobs that used it keep their ``preset_snapshot``.
    """
    row = await get_preset(_uuid(preset_id, "preset"))
    if row.source != USER_SOURCE:
        raise ValidationError(f"preset {row.name} comes from {row.source} and cannot be deleted")
    await row.delete()


async def reset_preset(preset_id: str | uuid.UUID) -> TranscodePreset:
    """Put a built-in or plugin preset back to the values its plugin ships, and clear ``modified``.

    A user preset has nothing to go back to (ValidationError); so has a
    shipped preset that was renamed or whose plugin no longer ships it.
    """
    from mpr.plugins import load_plugins

    row = await get_preset(_uuid(preset_id, "preset"))
    if row.source == USER_SOURCE:
        raise ValidationError(f"preset {row.name} is a user preset; only built-in and plugin presets can be reset")
    registry = load_plugins()
    shipped = registry.presets.get(row.name)
    if shipped is None or source_name(registry.owners.get(("preset", row.name), "")) != row.source:
        raise ValidationError(
            f"{row.source} ships no preset named {row.name!r} (renamed, or no longer shipped); it cannot be reset"
        )
    values = {k: v for k, v in validate_preset(shipped).to_dict().items() if k != "name"}
    await TranscodePreset.filter(id=row.id).update(modified=False, **values)
    return await TranscodePreset.get(id=row.id)


async def job_summary(job: TranscodeJob) -> dict[str, Any]:
    """A short dict describing a job (CLI listing)."""
    return {
        "id": str(job.id),
        "status": job.status.value,
        "progress": round(job.progress, 1),
        "preset": (job.preset_snapshot or {}).get("name", ""),
        "source": job.source_path,
        "output": job.output_path,
        "error": (job.error or "").splitlines()[0] if job.error else "",
        "final": job.status in FINAL_STATUSES,
    }
