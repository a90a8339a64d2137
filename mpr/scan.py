"""Scanning MEDIA_IN: register new media files as assets and probe them.

The walk goes through the MEDIA_IN storage backend, so the same code scans a
local folder, S3 or GCS. A file that cannot be probed becomes an asset with
status ``error`` and a readable message; the scan goes on. Scanning again
registers only files it has not seen (idempotent). A known file whose size
changed (it was still being copied when first scanned, or was replaced) is
probed again.

The watch folder (:mod:`mpr.watch`) passes the sizes and mtimes of its last
look (``previous_looks``): a new or changed file is then probed only once it
has looked the same twice, so a file still being copied is left for a later
pass instead of being registered half-written.

An asset whose file is no longer listed becomes ``missing`` (jobs cannot be
created from it); a later scan that lists the file again probes it and
restores it (``ready``, or ``error`` if the new file is broken). The asset,
its jobs and its comments are kept throughout.

Job outputs are never registered as sources when MEDIA_OUT overlaps MEDIA_IN
(:class:`OutputGuard`): nothing new under a MEDIA_OUT folder inside MEDIA_IN,
and, when both are the same root, no file a job writes or wrote. With
``MPR_AUTO_PRESET`` (:mod:`mpr.auto`) a scan ends by queueing the new ready
assets' jobs (``queued``).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from tortoise.exceptions import IntegrityError

from mpr.errors import MprError, NotFound, ProbeError, ValidationError
from mpr.jobs import now
from mpr.models import AssetKind, AssetStatus, AutoStatus, JobStatus, MediaAsset, TranscodeJob
from mpr.probe import probe
from mpr.settings import Settings, get_settings
from mpr.storage import ObjectInfo, Storage, media_in, media_out, safe_key

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {"mp4", "mkv", "avi", "mov", "webm", "flv", "wmv", "m4v", "ts", "m2ts", "mts", "mpg", "mpeg", "ogv", "3gp"}
)
AUDIO_EXTENSIONS = frozenset({"mp3", "wav", "flac", "aac", "ogg", "m4a", "mka", "opus", "wma", "aiff", "aif"})
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS


MISSING_ERROR = "the file is no longer in MEDIA_IN; put it back and scan again"


@dataclass
class ScanResult:
    """Counts of one scan: media files found, newly registered, already known; and per-file errors."""

    found: int = 0
    registered: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    updated: int = 0  # assets whose file changed (e.g. finished copying) and were probed again
    missing: int = 0  # assets whose file is not in MEDIA_IN (marked missing by this scan or an earlier one)
    restored: int = 0  # missing assets whose file is back, probed again
    waiting: int = 0  # new or changed files left for the next pass: still changing (only with previous_looks)
    looks: dict[str, tuple[int, float]] = field(default_factory=dict)  # (size, mtime) of those, for the next pass
    queued: int = 0  # auto jobs created (MPR_AUTO_PRESET) for new ready assets
    auto_skipped: int = 0  # new assets MPR_AUTO_PRESET does not apply to, or already in its format


def extension(key: str) -> str:
    """The lower-case extension of ``key`` without the dot ("" if none)."""
    name = posixpath.basename(key)
    return name.rsplit(".", 1)[1].lower() if "." in name.lstrip(".") else ""


def is_media(key: str) -> bool:
    """True for a key with one of the supported extensions (case-insensitive), hidden files excluded."""
    name = posixpath.basename(key)
    return not name.startswith(".") and extension(key) in MEDIA_EXTENSIONS


def kind_of(key: str) -> AssetKind:
    """The asset kind the extension suggests (probing may correct it: an .mp4 with only audio)."""
    return AssetKind.AUDIO if extension(key) in AUDIO_EXTENSIONS else AssetKind.VIDEO


def _probe_key(storage: Storage, key: str) -> dict:
    """Probe ``key`` (downloading it first for remote storage) and return MediaAsset field values."""
    try:
        with storage.local_copy(key) as path:
            result = probe(path)
    except ProbeError as exc:
        return {"status": AssetStatus.ERROR, "error": str(exc)}
    except MprError as exc:
        return {"status": AssetStatus.ERROR, "error": f"cannot read the file: {exc}"}
    except OSError as exc:
        return {"status": AssetStatus.ERROR, "error": f"cannot read the file: {exc.strerror or exc}"}
    fields = result.asset_fields()
    fields["kind"] = AssetKind(fields["kind"])
    fields.update(status=AssetStatus.READY, error=None)
    return fields


async def probe_asset_fields(key: str, settings: Settings | None = None) -> dict:
    """Probe MEDIA_IN ``key`` in a worker thread; the MediaAsset fields to store (status ready or error)."""
    storage = media_in(settings or get_settings())
    return await asyncio.to_thread(_probe_key, storage, key)


async def register(
    key: str, *, size: int | None = None, settings: Settings | None = None, auto: bool = False
) -> tuple[MediaAsset, bool]:
    """The asset for MEDIA_IN ``key``, probing and creating it if it is new; returns (asset, created).

    ``auto`` (scans and uploads): with MPR_AUTO_PRESET set, a new asset is
    marked ``auto = pending`` (:func:`mpr.auto.queue_pending` creates its job).
    Raises ValidationError for an unsupported extension and NotFound when the
    file does not exist.
    """
    key = safe_key(key)
    if not is_media(key):
        raise ValidationError(
            f"{posixpath.basename(key)!r} is not a supported media file "
            f"(extensions: {', '.join(sorted(MEDIA_EXTENSIONS))})"
        )
    existing = await MediaAsset.get_or_none(path=key)
    if existing is not None:
        return existing, False
    settings = settings or get_settings()
    storage = media_in(settings)
    if size is None:
        try:
            size = (await asyncio.to_thread(storage.stat, key)).size
        except NotFound:
            raise NotFound(f"{key} does not exist in MEDIA_IN") from None
    fields = await probe_asset_fields(key, settings)
    fields.setdefault("kind", kind_of(key))
    fields["size"] = size
    if auto and settings.auto_preset:
        fields["auto"] = AutoStatus.PENDING  # set by the one INSERT that wins: the job is due once
    try:
        asset = await MediaAsset.create(path=key, filename=posixpath.basename(key), **fields)
    except IntegrityError:
        # a concurrent scan registered it first
        asset = await MediaAsset.get(path=key)
        return asset, False
    if asset.status is AssetStatus.ERROR:
        log.warning("registered %s with error: %s", key, asset.error)
    return asset, True


def _settled(obj: ObjectInfo, previous_looks: Mapping[str, tuple[int, float]] | None, result: ScanResult) -> bool:
    """True when ``obj`` may be probed now: no previous looks given, or it looked the same last time."""
    if previous_looks is None:
        return True
    look = (obj.size, obj.mtime)
    if previous_looks.get(obj.key) == look:
        return True
    result.looks[obj.key] = look
    result.waiting += 1
    return False


async def scan(
    settings: Settings | None = None, *, previous_looks: Mapping[str, tuple[int, float]] | None = None
) -> ScanResult:
    """Walk MEDIA_IN, register every new media file, and report what was found.

    ``previous_looks``: ``looks`` of the previous pass (the watch folder); when
    given, new and changed files are probed only once their size and mtime
    stayed the same since that pass (the others are counted in ``waiting``).
    """
    settings = settings or get_settings()
    storage = media_in(settings)
    listed_at = now()
    objects = await asyncio.to_thread(lambda: [o for o in storage.list() if is_media(o.key)])
    # one query, one snapshot: an asset registered meanwhile (an upload) is in all three or in none
    rows = await MediaAsset.all().values_list("path", "size", "status")
    known = {path: size for path, size, _ in rows}
    probed = {path for path, _, status in rows if status in (AssetStatus.ERROR, AssetStatus.READY)}
    missing = {path for path, _, status in rows if status == AssetStatus.MISSING}
    del rows
    outputs = await OutputGuard(settings).outputs([o.key for o in objects if o.key not in known])
    if outputs:
        log.debug("scan: %d job output(s) in MEDIA_IN not registered: %s", len(outputs), sorted(outputs)[:10])
    result = ScanResult(found=len(objects) - len(outputs))
    for obj in objects:
        if obj.key in outputs:
            continue
        changed = obj.key in missing or (obj.key in probed and obj.size != known[obj.key]) or obj.key not in known
        if changed and not _settled(obj, previous_looks, result):
            if obj.key in known:
                result.skipped += 1
            continue
        if obj.key in missing:
            # the file is back (maybe a different one under the same name): probe it again
            fields = await probe_asset_fields(obj.key, settings)
            fields.setdefault("kind", kind_of(obj.key))
            await MediaAsset.filter(path=obj.key, status=AssetStatus.MISSING).update(
                size=obj.size, updated_at=now(), **fields
            )
            result.restored += 1
            result.skipped += 1
            if fields["status"] is AssetStatus.ERROR:
                result.errors.append(f"{obj.key}: {fields['error']}")
            log.info("%s is back in MEDIA_IN: %s", obj.key, fields["status"].value)
            continue
        if obj.key in known:
            if obj.key in probed and obj.size != known[obj.key]:
                # it was probably still being copied when it was first scanned (or was replaced): probe it again
                fields = await probe_asset_fields(obj.key, settings)
                fields.setdefault("kind", kind_of(obj.key))
                await MediaAsset.filter(path=obj.key).update(size=obj.size, updated_at=now(), **fields)
                result.updated += 1
                if fields["status"] is AssetStatus.ERROR:
                    result.errors.append(f"{obj.key}: {fields['error']}")
                log.info("%s changed in MEDIA_IN: probed again, %s", obj.key, fields["status"].value)
            result.skipped += 1
            continue
        try:
            asset, created = await register(obj.key, size=obj.size, settings=settings, auto=True)
        except MprError as exc:
            result.errors.append(f"{obj.key}: {exc}")
            continue
        if not created:
            result.skipped += 1
            continue
        result.registered += 1
        if asset.status is AssetStatus.ERROR:
            result.errors.append(f"{obj.key}: {asset.error}")
        else:
            log.info("registered %s (asset %s): %s", obj.key, asset.id, asset.status.value)
    result.missing = await _mark_missing({o.key for o in objects}, listed_at)
    if settings.auto_preset:
        from mpr.auto import queue_pending

        auto = await queue_pending(settings)
        result.queued, result.auto_skipped = auto.queued, auto.skipped
        result.errors += auto.errors
    changed = result.registered or result.updated or result.restored or result.queued or result.auto_skipped
    quiet = previous_looks is not None and not changed
    log.log(
        logging.DEBUG if quiet else logging.INFO,  # the watch folder's passes that changed nothing
        "scan of %s: %d found, %d registered, %d skipped, %d missing%s",
        storage.root,
        result.found,
        result.registered,
        result.skipped,
        result.missing,
        f", {result.queued} queued, {result.auto_skipped} not for {settings.auto_preset}"
        if settings.auto_preset
        else "",
    )
    return result


class OutputGuard:
    """Which listed MEDIA_IN keys are job outputs, when MEDIA_OUT overlaps MEDIA_IN (never sources).

    MEDIA_OUT a folder inside MEDIA_IN: everything under it. The same root, or
    MEDIA_IN inside MEDIA_OUT: the files whose MEDIA_OUT key is the output of
    a job that is not failed or cancelled (a failed job wrote nothing: a file
    under its reserved name is someone's source). Whatever the roots: the
    files in a folder named after a job's id (a cloud executor's chunk files). Roots are compared resolved
    (``Storage.locate``); backends without it never overlap.
    """

    def __init__(self, settings: Settings) -> None:
        self.subtree: str | None = None  # MEDIA_IN key prefix of a MEDIA_OUT inside MEDIA_IN
        self.out_prefix: str | None = None  # prefix making a MEDIA_IN key a MEDIA_OUT key ("" for the same root)
        try:
            source, out = media_in(settings), media_out(settings)
        except MprError:  # MEDIA_OUT's backend is not installed here: nothing of it can be listed either
            return
        locate_in, locate_out = getattr(source, "locate", None), getattr(out, "locate", None)
        if locate_in is None or locate_out is None:
            return
        base_in, base_out = locate_in("").rstrip("/"), locate_out("").rstrip("/")
        if base_in == base_out:
            self.out_prefix = ""
        elif base_out.startswith(base_in + "/"):
            self.subtree = base_out[len(base_in) + 1 :] + "/"
        elif base_in.startswith(base_out + "/"):
            self.out_prefix = base_in[len(base_out) + 1 :] + "/"

    async def outputs(self, keys: list[str]) -> set[str]:
        """The job outputs among MEDIA_IN ``keys``, and the files of a job's scratch folder."""
        scratch = await _job_scratch(keys)
        if scratch:
            keys = [k for k in keys if k not in scratch]
        return scratch | await self._outputs(keys)

    async def _outputs(self, keys: list[str]) -> set[str]:
        if self.subtree is not None:
            return {k for k in keys if k.startswith(self.subtree)}
        if self.out_prefix is None or not keys:
            return set()
        by_out = {self.out_prefix + k: k for k in keys}
        names = list(by_out)
        found: set[str] = set()
        for chunk in range(0, len(names), 500):  # stay below SQLite's bound-parameter limit
            found.update(
                await TranscodeJob.filter(output_path__in=names[chunk : chunk + 500])
                .exclude(status__in=[JobStatus.FAILED, JobStatus.CANCELLED])
                .values_list("output_path", flat=True)
            )
        return {by_out[name] for name in found}


# a folder named after a job id: the chunk files a cloud executor keeps while (and, for a retry, after)
# a job runs (GCP: MEDIA_OUT/_mpr/gcp/<job id>/..., Lambda: s3://<output bucket>/mpr-work/<job id>/...)
_JOB_FOLDER = re.compile(r"(?:^|/)([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?=/)")


async def _job_scratch(keys: list[str]) -> set[str]:
    """The ``keys`` inside a folder named after an existing job's id (an executor's work files).

    They are listed when MEDIA_IN holds that work area (MEDIA_OUT the same folder or bucket prefix,
    or MEDIA_IN a whole bucket with Lambda's ``mpr-work/``) and are never sources; a folder named
    after an id no job has is an ordinary folder.
    """
    by_id: dict[str, list[str]] = {}
    for key in keys:
        for match in _JOB_FOLDER.finditer(key):
            by_id.setdefault(match.group(1).lower(), []).append(key)
    if not by_id:
        return set()
    ids = list(by_id)
    found: set[str] = set()
    for chunk in range(0, len(ids), 500):  # stay below SQLite's bound-parameter limit
        found.update(
            str(i) for i in await TranscodeJob.filter(id__in=ids[chunk : chunk + 500]).values_list("id", flat=True)
        )
    return {key for job_id in found for key in by_id[job_id]}


async def _mark_missing(listed: set[str], listed_at: datetime.datetime) -> int:
    """Mark assets whose file was not in the listing ``missing``; returns how many are missing now.

    Every asset path is a key of MEDIA_IN, the storage just listed, so an
    asset not in the listing has no file there. Assets created after the
    listing started (an upload or a ``register`` racing this scan) are left
    alone: the listing could not have seen their file.
    """
    gone = [
        path
        for path in await MediaAsset.filter(created_at__lt=listed_at)
        .exclude(status=AssetStatus.MISSING)
        .values_list("path", flat=True)
        if path not in listed
    ]
    for chunk in range(0, len(gone), 500):  # stay below SQLite's bound-parameter limit
        await (
            MediaAsset.filter(path__in=gone[chunk : chunk + 500])
            .exclude(status=AssetStatus.MISSING)
            .update(status=AssetStatus.MISSING, error=MISSING_ERROR, updated_at=now())
        )
    for path in gone:
        log.warning("%s is no longer in MEDIA_IN: marked missing", path)
    return await MediaAsset.filter(status=AssetStatus.MISSING).count()
