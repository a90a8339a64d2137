"""The GraphQL API (Strawberry) at ``/graphql``.

Every operation of the seed works unchanged (``assets(status: "ready")``,
``createJob(input: {sourceAssetId, presetId})``, ...). Resolvers are thin:
reads are plain ORM queries, writes call :mod:`mpr.service`. Nested fields
(``job.sourceAsset``, ``job.chunks``, ``asset.jobs``) go through per-request
DataLoaders, so a list costs a fixed number of queries whatever its length.

Errors: an :class:`~mpr.errors.MprError` becomes a GraphQL error with its
message; anything else is logged with its traceback and shown as
``internal error (request id …)`` (see :class:`MaskInternalErrors`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
import re
import urllib.parse
import uuid
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any

import strawberry
from graphql.error import GraphQLError
from strawberry.dataloader import DataLoader
from strawberry.extensions import MaskErrors, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter, SchemaExtension
from strawberry.permission import BasePermission
from strawberry.scalars import JSON
from strawberry.types import Info
from tortoise.expressions import Q

import mpr
from mpr import bus
from mpr.api.auth import bearer_token, reads_need_token, sign_url, token_ok
from mpr.api.fastexec import FastExecutionContext, prefetchable
from mpr.errors import AuthError, ConfigError, MprError, NotFound, ValidationError
from mpr.models import (
    AssetKind,
    AssetStatus,
    JobChunk,
    JobStatus,
    MediaAsset,
    TranscodeJob,
    TranscodePreset,
)
from mpr.settings import Settings, get_settings
from mpr.stats import job_statistics, size_ratio

log = logging.getLogger("mpr.api")

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_DEPTH = 8
MAX_ALIASES = 50  # an alias flood (thousands of copies of one list field) would tie up the server
MAX_TOKENS = 20_000  # GraphiQL's introspection query is ~1,000 tokens


# --------------------------------------------------------------------------- helpers


def parse_uuid(value: str | uuid.UUID, what: str) -> uuid.UUID:
    """``value`` as a UUID, or ValidationError naming what was expected."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValidationError(f"{value!r} is not a valid {what} id (expected a UUID)") from None


def _choice(value: str | None, enum: type, what: str) -> Any:
    """A lowercase status/kind string (the seed's form) as its enum, or ValidationError."""
    if value is None:
        return None
    try:
        return enum(value.strip().lower())
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise ValidationError(f"unknown {what} {value!r}; expected one of {allowed}") from None


def _page(limit: int | None, offset: int | None, first: int | None) -> tuple[int, int]:
    size = first if first is not None else limit
    size = DEFAULT_LIMIT if size is None else size
    if size < 0 or size > MAX_LIMIT:
        raise ValidationError(f"limit/first must be between 0 and {MAX_LIMIT}, got {size}")
    offset = offset or 0
    if offset < 0:
        raise ValidationError(f"offset must be >= 0, got {offset}")
    return size, offset


def media_url(root: str, key: str) -> str:
    """The URL a browser fetches a media key from: the storage's own URL, else MPR's ``/media/...`` route."""
    from mpr import storage

    settings = get_settings()
    try:
        backend = storage.media_out(settings) if root == "out" else storage.media_in(settings)
        url = backend.url(key)
    except MprError:
        url = None
    if url:
        return url
    # MPR's own route: signed when reads need the token (a <video src> cannot send a header)
    return sign_url(settings, f"/media/{root}/{key}", f"/media/{root}/{urllib.parse.quote(key)}")


def _context(info: Info) -> dict[str, Any]:
    return info.context


AUTH_MESSAGE = "this operation needs 'Authorization: Bearer <token>' (MPR_API_TOKEN is set)"
AUTH_CODE = {"code": "UNAUTHENTICATED"}  # in the error's extensions: the UIs ask for the token on it


def _has_token(ctx: dict[str, Any]) -> bool:
    """True when the request (HTTP or WebSocket) carries the API token, or none is configured."""
    settings: Settings = ctx["settings"]
    if not settings.api_token:
        return True
    conn = ctx.get("request") or ctx.get("socket") or ctx.get("websocket")
    headers = getattr(conn, "headers", None)
    return token_ok(settings, bearer_token(headers, ctx.get("connection_params")))


class TokenRequired(BasePermission):
    """Mutations and subscriptions need ``Authorization: Bearer <MPR_API_TOKEN>`` when a token is set."""

    message = AUTH_MESSAGE

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return _has_token(_context(info))

    def on_unauthorized(self) -> None:
        error = AuthError(AUTH_MESSAGE)
        error.extensions = dict(AUTH_CODE)  # type: ignore[attr-defined]  # graphql-core copies it to the error
        raise error


def _text(value: Any) -> str:
    return str(getattr(value, "value", value)) if value is not None else ""


def _id(value: Any) -> str | None:
    return str(value) if value else None


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def row_factory(cls: type, converters: dict[str, Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """A function building ``cls`` objects from a model instance or a ``values()`` dict.

    Each dataclass field takes the column of the same name, through its
    converter if it has one; a column the row lacks (``values()`` loads only
    what the query asked for) gets the converter's value for None. It fills
    the object's ``__dict__`` instead of calling the dataclass ``__init__``
    with every field: a 1,000-row list builds its objects ~3x faster.
    Fields with a ``default_factory`` get a fresh value per object.
    """
    fields = dataclasses.fields(cls)
    factories = {f.name: f.default_factory for f in fields if f.default_factory is not dataclasses.MISSING}
    columns = [f.name for f in fields if f.name not in factories]
    empty = {name: converters[name](None) if name in converters else None for name in columns}

    def build(row: Any) -> Any:
        if not isinstance(row, dict):
            row = {name: getattr(row, name, None) for name in columns}
        obj = cls.__new__(cls)
        values = obj.__dict__
        values.update(empty)
        for name, make in factories.items():
            values[name] = make()
        for key, value in row.items():
            if key in empty:
                convert = converters.get(key)
                values[key] = value if convert is None else convert(value)
        return obj

    return build


# GraphQL field -> the columns it needs (fields not listed map to their snake_case column)
_ASSET_NEEDS = {"url": ("path",), "thumbnailUrl": ("id",), "jobs": ("id",), "autoStatus": ("auto",)}
_JOB_NEEDS = {
    "output": ("status", "output_path", "output_size", "output_duration"),
    "sourceAsset": ("source_asset_id",),
    "preset": ("preset_id",),
    "chunks": ("id",),
    "sourceSize": ("source_asset_id",),
    "sizeRatio": ("source_asset_id", "status", "output_size"),
}
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _requested(info: Info, under: str | None = None) -> set[str]:
    """Names of the fields selected under the current field, or under its sub-field ``under``."""
    names: set[str] = set()

    def walk(selections: Iterable[Any], target: str | None) -> None:
        for sel in selections:
            if hasattr(sel, "name") and not hasattr(sel, "type_condition"):
                if target is None:
                    names.add(sel.name)
                elif sel.name == target:
                    walk(sel.selections, None)
            else:  # fragment spread or inline fragment
                walk(getattr(sel, "selections", []), target)

    for field in info.selected_fields:
        walk(field.selections, under)
    return names


def columns_for(info: Info, model: type, needs: dict[str, tuple[str, ...]], under: str | None = None) -> list[str]:
    """The model columns a list query must load for the fields the client asked for."""
    db_fields = set(model._meta.db_fields) | {f + "_id" for f in model._meta.fk_fields}
    cols = {"id"}
    for name in _requested(info, under):
        if name in needs:
            cols.update(needs[name])
        else:
            column = _CAMEL.sub("_", name).lower()
            if column in db_fields:
                cols.add(column)
    return sorted(c for c in cols if c in db_fields)


# --------------------------------------------------------------------------- loaders


def _by_id(rows: Iterable[Any], keys: list[uuid.UUID]) -> list[Any]:
    found = {row.id: row for row in rows}
    return [found.get(k) for k in keys]


async def _load_assets(keys: list[uuid.UUID]) -> list[MediaAsset | None]:
    return _by_id(await MediaAsset.filter(id__in=keys), keys)


async def _load_presets(keys: list[uuid.UUID]) -> list[TranscodePreset | None]:
    return _by_id(await TranscodePreset.filter(id__in=keys), keys)


async def _load_chunks(keys: list[uuid.UUID]) -> list[list[JobChunk]]:
    grouped: dict[uuid.UUID, list[JobChunk]] = defaultdict(list)
    for chunk in await JobChunk.filter(job_id__in=keys).order_by("index"):
        grouped[chunk.job_id].append(chunk)
    return [grouped.get(k, []) for k in keys]


async def _load_asset_jobs(keys: list[uuid.UUID]) -> list[list[TranscodeJob]]:
    grouped: dict[uuid.UUID, list[TranscodeJob]] = defaultdict(list)
    for job in await TranscodeJob.filter(source_asset_id__in=keys).order_by("-created_at"):
        grouped[job.source_asset_id].append(job)
    return [grouped.get(k, []) for k in keys]


def make_loaders() -> dict[str, DataLoader]:
    """Fresh per-request DataLoaders (one query per kind of nested field per request)."""
    return {
        "assets": DataLoader(load_fn=_load_assets),
        "presets": DataLoader(load_fn=_load_presets),
        "chunks": DataLoader(load_fn=_load_chunks),
        "asset_jobs": DataLoader(load_fn=_load_asset_jobs),
    }


async def _load_one(info: Info, loader: str, key: Any, kind: Any) -> Any:
    row = await _context(info)["loaders"][loader].load(uuid.UUID(str(key)))
    return kind.from_model(row) if row else None


JOINED_ASSET = "source_asset__"  # Tortoise's values() prefix for the LEFT JOINed source asset's columns


JOINED_SOURCE_SIZE = JOINED_ASSET + "size"
_SIZE_FIELDS = {"sourceSize", "sizeRatio"}


def joined_asset_columns(info: Info) -> list[str]:
    """The ``values()`` names that fetch a `jobs` list's ``sourceAsset`` fields in the same query (a join)."""
    if "sourceAsset" not in _requested(info):
        return []
    return [JOINED_ASSET + c for c in columns_for(info, MediaAsset, _ASSET_NEEDS, under="sourceAsset")]


def joined_size_columns(info: Info) -> list[str]:
    """The source asset's size through the same join, when a `jobs` list asks for sourceSize or sizeRatio."""
    return [JOINED_SOURCE_SIZE] if _requested(info) & _SIZE_FIELDS else []


def jobs_from_rows(rows: list[dict[str, Any]], joined: list[str], sizes: bool = False) -> list[Job]:
    """Jobs from ``values()`` rows; the joined asset columns (if any) become each job's ``sourceAsset``.

    ``sizes``: the rows hold ``source_asset__size`` too, which becomes each job's sourceSize and sizeRatio.
    """
    jobs = []
    cut = len(JOINED_ASSET)
    for row in rows:
        job = Job.from_model(row)
        if joined:
            asset = {name[cut:]: row[name] for name in joined} if row.get(JOINED_ASSET + "id") is not None else None
            job.prefetched["sourceAsset"] = Asset.from_model(asset) if asset else None
        if sizes:
            job.set_source_size(row.get(JOINED_SOURCE_SIZE))
        jobs.append(job)
    return jobs


async def prefetch_presets(info: Info, jobs: list[Job]) -> None:
    """Load the presets a `jobs` list asks for in one query, attached to the jobs."""
    if "preset" in _requested(info):
        keys = list({j.preset_id for j in jobs if j.preset_id})
        presets = {str(r.id): Preset.from_model(r) for r in await TranscodePreset.filter(id__in=keys)}
        for job in jobs:
            job.prefetched["preset"] = presets.get(str(job.preset_id))


# --------------------------------------------------------------------------- types


@strawberry.type(description="A source video or audio file under MEDIA_IN.")
class Asset:
    id: strawberry.ID
    path: str
    filename: str
    kind: str
    size: float
    status: str
    error: str | None
    duration: float | None
    container: str | None
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    fps: float | None
    bitrate: float | None
    sample_rate: int | None
    channels: int | None
    comments: str
    created_at: dt.datetime
    updated_at: dt.datetime
    auto: str | None = strawberry.field(
        name="autoStatus",
        description="Automatic transcoding (MPR_AUTO_PRESET): pending, queued or skipped; null when not an auto asset.",
    )
    auto_reason: str | None = strawberry.field(
        description="Why automatic transcoding skipped the asset (null unless autoStatus is skipped)."
    )

    @strawberry.field(description="Where a browser can play the file (Range-capable or presigned).")
    def url(self) -> str:
        return media_url("in", self.path)

    @strawberry.field(
        description="A JPEG frame (signed like `url`); add t=<seconds> and w=<pixels> to its query to pick one."
    )
    def thumbnail_url(self, t: float | None = None, w: int | None = None) -> str:
        query = {k: v for k, v in (("t", t), ("w", w)) if v is not None}
        path = f"/api/assets/{self.id}/thumbnail"
        return sign_url(get_settings(), path, path + (f"?{urllib.parse.urlencode(query)}" if query else ""))

    @strawberry.field(description="Jobs made from this asset, newest first.")
    async def jobs(self, info: Info) -> list[Job]:
        rows = await _context(info)["loaders"]["asset_jobs"].load(uuid.UUID(str(self.id)))
        return [Job.from_model(j) for j in rows]

    @classmethod
    def from_model(cls, a: MediaAsset | dict[str, Any]) -> Asset:
        """From a model, or from a ``values()`` dict holding only the requested columns."""
        return _asset_from_row(a)


_asset_from_row = row_factory(
    Asset,
    {
        "id": _id,
        "kind": _text,
        "status": _text,
        "size": lambda v: float(v or 0),
        "bitrate": _float,
        "comments": lambda v: v or "",
        "auto": lambda v: str(getattr(v, "value", v)) if v is not None else None,
    },
)


@strawberry.type(description="An encoding recipe. Built-in and plugin presets cannot be deleted.")
class Preset:
    id: strawberry.ID
    name: str
    description: str
    container: str
    video_codec: str | None
    video_bitrate: str | None
    crf: int | None
    speed_preset: str | None
    width: int | None
    height: int | None
    fps: float | None
    audio_codec: str | None
    audio_bitrate: str | None
    sample_rate: int | None
    channels: int | None
    extra: JSON
    source: str
    modified: bool
    created_at: dt.datetime
    updated_at: dt.datetime

    @strawberry.field(description="True for presets shipped by MPR or a plugin (protected from deletion).")
    def builtin(self) -> bool:
        return self.source != "user"

    @classmethod
    def from_model(cls, p: TranscodePreset) -> Preset:
        return cls(
            id=strawberry.ID(str(p.id)),
            name=p.name,
            description=p.description or "",
            container=p.container,
            video_codec=p.video_codec,
            video_bitrate=p.video_bitrate,
            crf=p.crf,
            speed_preset=p.speed_preset,
            width=p.width,
            height=p.height,
            fps=p.fps,
            audio_codec=p.audio_codec,
            audio_bitrate=p.audio_bitrate,
            sample_rate=p.sample_rate,
            channels=p.channels,
            extra=p.extra or {},
            source=p.source,
            modified=bool(p.modified),
            created_at=p.created_at,
            updated_at=p.updated_at,
        )


@strawberry.type(description="One time segment of a chunked job.")
class Chunk:
    index: int
    start: float
    end: float
    status: str
    attempts: int
    worker: str | None
    output_key: str | None
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def from_model(cls, c: JobChunk) -> Chunk:
        return cls(
            index=c.index,
            start=c.start,
            end=c.end,
            status=str(c.status.value if hasattr(c.status, "value") else c.status),
            attempts=c.attempts,
            worker=c.worker,
            output_key=c.output_key,
            error=c.error,
            started_at=c.started_at,
            finished_at=c.finished_at,
        )


@strawberry.type(description="The file a completed job wrote to MEDIA_OUT.")
class JobOutput:
    path: str
    size: float | None
    duration: float | None

    @strawberry.field(description="Download/playback URL (MPR's /media/out route or a presigned URL).")
    def url(self) -> str:
        return media_url("out", self.path)


@strawberry.type(description="One transcode, trim or remux of one asset.")
class Job:
    id: strawberry.ID
    status: str
    progress: float
    speed: float | None
    eta: float | None
    error: str | None
    attempts: int
    priority: int
    executor: str
    external_id: str | None
    trim_start: float | None
    trim_end: float | None
    chunked: bool
    chunk_seconds: float | None
    chunk_workers: int | None
    worker: str | None
    output_path: str
    source_path: str
    source_asset_id: strawberry.ID | None
    preset_id: strawberry.ID | None
    preset_snapshot: JSON
    metrics: JSON | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    output_size: strawberry.Private[float | None] = None
    output_duration: strawberry.Private[float | None] = None
    # nested objects loaded in bulk by the `jobs` list (sync resolvers, no per-item task)
    prefetched: strawberry.Private[dict[str, Any]] = dataclasses.field(default_factory=dict)

    @strawberry.field(description="The output file, once the job is completed.")
    def output(self) -> JobOutput | None:
        if self.status != JobStatus.COMPLETED.value:
            return None
        return JobOutput(path=self.output_path, size=self.output_size, duration=self.output_duration)

    @prefetchable()
    def source_asset(self, info: Info) -> Asset | None:
        if self.source_asset_id is None:
            return None
        if "sourceAsset" in self.prefetched:
            return self.prefetched["sourceAsset"]
        return _load_one(info, "assets", self.source_asset_id, Asset)  # type: ignore[return-value]

    @prefetchable()
    def preset(self, info: Info) -> Preset | None:
        if self.preset_id is None:
            return None
        if "preset" in self.prefetched:
            return self.prefetched["preset"]
        return _load_one(info, "presets", self.preset_id, Preset)  # type: ignore[return-value]

    @prefetchable(
        description="Size in bytes of the source asset now (null once the asset is deleted); "
        "read at query time, the job keeps no copy of it."
    )
    def source_size(self, info: Info) -> float | None:
        if self.source_asset_id is None:
            return None
        if "sourceSize" in self.prefetched:
            return self.prefetched["sourceSize"]
        return self._load_source_size(info, "sourceSize")  # type: ignore[return-value]

    @prefetchable(
        description="outputSize / sourceSize (below 1: the output is smaller); "
        "null unless the job is completed and both sizes are known."
    )
    def size_ratio(self, info: Info) -> float | None:
        if self.source_asset_id is None or self.status != JobStatus.COMPLETED.value:
            return None
        if "sizeRatio" in self.prefetched:
            return self.prefetched["sizeRatio"]
        return self._load_source_size(info, "sizeRatio")  # type: ignore[return-value]

    def set_source_size(self, size: Any) -> None:
        """Attach the source asset's size (None: no asset) as sourceSize and sizeRatio."""
        source = float(size) if size is not None else None
        self.prefetched["sourceSize"] = source
        self.prefetched["sizeRatio"] = size_ratio(self.status, self.output_size, source)

    async def _load_source_size(self, info: Info, field: str) -> float | None:
        asset = await _context(info)["loaders"]["assets"].load(uuid.UUID(str(self.source_asset_id)))
        self.set_source_size(asset.size if asset else None)
        return self.prefetched[field]

    @strawberry.field(description="Chunks of a chunked job, in order (empty otherwise).")
    async def chunks(self, info: Info) -> list[Chunk]:
        rows = await _context(info)["loaders"]["chunks"].load(uuid.UUID(str(self.id)))
        return [Chunk.from_model(c) for c in rows]

    @classmethod
    def from_model(cls, j: TranscodeJob | dict[str, Any]) -> Job:
        """From a model, or from a ``values()`` dict holding only the requested columns."""
        return _job_from_row(j)


_job_from_row = row_factory(
    Job,
    {
        "id": _id,
        "status": _text,
        "progress": lambda v: v or 0.0,
        "source_asset_id": _id,
        "preset_id": _id,
        "preset_snapshot": lambda v: v or {},
        "output_size": _float,
    },
)


@strawberry.type
class HealthCheck:
    name: str
    ok: bool
    detail: str


@strawberry.type(description="Is MPR able to work right now (the same checks as /readyz).")
class SystemStatus:
    status: str
    version: str
    executor: str
    checks: list[HealthCheck]
    pending_jobs: int | None
    processing_jobs: int | None
    pid: int = strawberry.field(description="The API process that answered (its operating-system pid).")
    api_processes: int = strawberry.field(description="API processes serving this port (mpr serve --processes).")
    auto_preset: str | None = strawberry.field(
        default=None,
        description="The preset new media get a job with (MPR_AUTO_PRESET, by name); null when automatic "
        "transcoding is off. The variable's own value when it names no preset or the database is down.",
    )


@strawberry.type
class StatusCount:
    status: str
    count: int


@strawberry.type(
    description="Job counts and the space saved by completed jobs, computed by the database (COUNT/SUM). "
    "Byte totals cover completed jobs with an output size whose source asset still exists; "
    "bytesSaved = completedBytesIn - completedBytesOut and is negative when outputs are bigger than sources."
)
class Statistics:
    jobs_total: int
    jobs_by_status: list[StatusCount] = strawberry.field(description="Every job status, 0 when none.")
    completed_bytes_in: float = strawberry.field(description="Sum of the source sizes (bytes).")
    completed_bytes_out: float = strawberry.field(description="Sum of the output sizes (bytes).")
    bytes_saved: float = strawberry.field(description="completedBytesIn - completedBytesOut; may be negative.")
    completed_jobs_compared: int = strawberry.field(description="Completed jobs the byte totals cover.")


@strawberry.type
class ScanResult:
    found: int
    registered: int
    skipped: int
    errors: list[str]
    missing: int = 0
    queued: int = strawberry.field(default=0, description="Jobs created by MPR_AUTO_PRESET for new media.")
    auto_skipped: int = strawberry.field(
        default=0, description="New media MPR_AUTO_PRESET does not apply to, or already in its format (logged)."
    )


@strawberry.type
class DeleteResult:
    ok: bool


@strawberry.type(description="Something that happened to a job (status change, progress, chunk event).")
class JobEventType:
    job_id: strawberry.ID
    type: str
    status: str
    progress: float
    chunk_index: int
    worker: str
    fps: float
    speed: float
    eta: float
    message: str
    ts: float
    sequence: int

    @classmethod
    def from_event(cls, e: Any) -> JobEventType:
        return cls(
            job_id=strawberry.ID(e.job_id),
            type=e.type,
            status=e.status,
            progress=e.progress,
            chunk_index=e.chunk_index,
            worker=e.worker,
            fps=e.fps,
            speed=e.speed,
            eta=e.eta,
            message=e.message,
            ts=e.ts,
            sequence=e.seq,
        )


# --------------------------------------------------------------------------- inputs


@strawberry.input
class CreateJobInput:
    source_asset_id: strawberry.ID
    preset_id: strawberry.ID | None = None
    trim_start: float | None = None
    trim_end: float | None = None
    output_name: str | None = None
    priority: int | None = None
    chunked: bool | None = None
    chunk_seconds: float | None = None
    chunk_workers: int | None = None
    executor: str | None = None


@strawberry.input
class UpdateAssetInput:
    comments: str


_PRESET_FIELDS = (
    "name",
    "description",
    "container",
    "video_codec",
    "video_bitrate",
    "crf",
    "speed_preset",
    "width",
    "height",
    "fps",
    "audio_codec",
    "audio_bitrate",
    "sample_rate",
    "channels",
    "extra",
)


@strawberry.input(description="A new preset. Codecs: an ffmpeg encoder name, 'copy', or null/'none' to drop.")
class PresetInput:
    name: str
    container: str
    description: str | None = strawberry.UNSET
    video_codec: str | None = strawberry.UNSET
    video_bitrate: str | None = strawberry.UNSET
    crf: int | None = strawberry.UNSET
    speed_preset: str | None = strawberry.UNSET
    width: int | None = strawberry.UNSET
    height: int | None = strawberry.UNSET
    fps: float | None = strawberry.UNSET
    audio_codec: str | None = strawberry.UNSET
    audio_bitrate: str | None = strawberry.UNSET
    sample_rate: int | None = strawberry.UNSET
    channels: int | None = strawberry.UNSET
    extra: JSON | None = strawberry.UNSET


@strawberry.input(description="Changes to a preset; only the fields given are changed.")
class PresetUpdateInput:
    name: str | None = strawberry.UNSET
    container: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    video_codec: str | None = strawberry.UNSET
    video_bitrate: str | None = strawberry.UNSET
    crf: int | None = strawberry.UNSET
    speed_preset: str | None = strawberry.UNSET
    width: int | None = strawberry.UNSET
    height: int | None = strawberry.UNSET
    fps: float | None = strawberry.UNSET
    audio_codec: str | None = strawberry.UNSET
    audio_bitrate: str | None = strawberry.UNSET
    sample_rate: int | None = strawberry.UNSET
    channels: int | None = strawberry.UNSET
    extra: JSON | None = strawberry.UNSET


def _given(data: Any) -> dict[str, Any]:
    """The fields of a preset input that were actually sent (UNSET ones are left out)."""
    return {
        name: getattr(data, name)
        for name in _PRESET_FIELDS
        if getattr(data, name, strawberry.UNSET) is not strawberry.UNSET
    }


# --------------------------------------------------------------------------- queries


async def _job_cursor_filter(qs: Any, after: str) -> Any:
    anchor = await TranscodeJob.get_or_none(id=parse_uuid(after, "job")).only("id", "created_at")
    if anchor is None:
        raise NotFound(f"cursor job {after} does not exist")
    return qs.filter(Q(created_at__lt=anchor.created_at) | Q(created_at=anchor.created_at, id__lt=anchor.id))


@strawberry.type
class Query:
    @strawberry.field(
        description="Assets, ordered by path. Filter by status (pending|ready|error|missing), kind, search."
    )
    async def assets(
        self,
        info: Info,
        status: str | None = None,
        kind: str | None = None,
        search: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        first: int | None = None,
        after: strawberry.ID | None = None,
    ) -> list[Asset]:
        size, skip = _page(limit, offset, first)
        qs = MediaAsset.all()
        if (st := _choice(status, AssetStatus, "asset status")) is not None:
            qs = qs.filter(status=st)
        if (kd := _choice(kind, AssetKind, "asset kind")) is not None:
            qs = qs.filter(kind=kd)
        if search:
            qs = qs.filter(Q(path__icontains=search) | Q(comments__icontains=search))
        if after:
            anchor = await MediaAsset.get_or_none(id=parse_uuid(after, "asset")).only("id", "path")
            if anchor is None:
                raise NotFound(f"cursor asset {after} does not exist")
            qs = qs.filter(path__gt=anchor.path)
        if size == 0:
            return []  # Tortoise drops "LIMIT 0" and SQLite then refuses a bare OFFSET (internal error)
        cols = columns_for(info, MediaAsset, _ASSET_NEEDS)
        rows = await qs.order_by("path").offset(skip).limit(size).values(*cols)
        return [Asset.from_model(a) for a in rows]

    @strawberry.field(description="Number of assets matching the same filters as `assets`.")
    async def asset_count(self, status: str | None = None, kind: str | None = None, search: str | None = None) -> int:
        qs = MediaAsset.all()
        if (st := _choice(status, AssetStatus, "asset status")) is not None:
            qs = qs.filter(status=st)
        if (kd := _choice(kind, AssetKind, "asset kind")) is not None:
            qs = qs.filter(kind=kd)
        if search:
            qs = qs.filter(Q(path__icontains=search) | Q(comments__icontains=search))
        return await qs.count()

    @strawberry.field
    async def asset(self, id: strawberry.ID) -> Asset:
        row = await MediaAsset.get_or_none(id=parse_uuid(id, "asset"))
        if row is None:
            raise NotFound(f"asset {id} does not exist")
        return Asset.from_model(row)

    @strawberry.field(description="Jobs, newest first. Filter by status, asset, executor, search (paths).")
    async def jobs(
        self,
        info: Info,
        status: str | None = None,
        asset_id: strawberry.ID | None = None,
        executor: str | None = None,
        search: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        first: int | None = None,
        after: strawberry.ID | None = None,
    ) -> list[Job]:
        size, skip = _page(limit, offset, first)
        qs = _jobs_filter(status, asset_id, executor, search)
        if after:
            qs = await _job_cursor_filter(qs, after)
        if size == 0:
            return []  # see assets(): LIMIT 0 with an OFFSET is an SQLite syntax error through Tortoise
        cols = columns_for(info, TranscodeJob, _JOB_NEEDS)
        joined = joined_asset_columns(info)
        sizes = [c for c in joined_size_columns(info) if c not in joined]
        rows = await qs.order_by("-created_at", "-id").offset(skip).limit(size).values(*cols, *joined, *sizes)
        result = jobs_from_rows(rows, joined, sizes=bool(joined_size_columns(info)))
        await prefetch_presets(info, result)
        return result

    @strawberry.field(description="Number of jobs matching the same filters as `jobs`.")
    async def job_count(
        self,
        status: str | None = None,
        asset_id: strawberry.ID | None = None,
        executor: str | None = None,
        search: str | None = None,
    ) -> int:
        return await _jobs_filter(status, asset_id, executor, search).count()

    @strawberry.field
    async def job(self, id: strawberry.ID) -> Job:
        row = await TranscodeJob.get_or_none(id=parse_uuid(id, "job"))
        if row is None:
            raise NotFound(f"job {id} does not exist")
        return Job.from_model(row)

    @strawberry.field(description="All presets, ordered by name.")
    async def presets(self, search: str | None = None) -> list[Preset]:
        qs = TranscodePreset.all()
        if search:
            qs = qs.filter(Q(name__icontains=search) | Q(description__icontains=search))
        return [Preset.from_model(p) for p in await qs.order_by("name")]

    @strawberry.field
    async def preset(self, id: strawberry.ID) -> Preset:
        row = await TranscodePreset.get_or_none(id=parse_uuid(id, "preset"))
        if row is None:
            raise NotFound(f"preset {id} does not exist")
        return Preset.from_model(row)

    @strawberry.field(description="Job counts per status and bytes saved by completed jobs (aggregate SQL).")
    async def statistics(self) -> Statistics:
        st = await job_statistics()
        return Statistics(
            jobs_total=st.jobs_total,
            jobs_by_status=[StatusCount(status=k, count=v) for k, v in st.jobs_by_status.items()],
            completed_bytes_in=float(st.completed_bytes_in),
            completed_bytes_out=float(st.completed_bytes_out),
            bytes_saved=float(st.bytes_saved),
            completed_jobs_compared=st.compared_jobs,
        )

    @strawberry.field
    async def system_status(self, info: Info) -> SystemStatus:
        from mpr.api.health import run_checks

        settings: Settings = _context(info)["settings"]
        checks = await run_checks(settings)
        counts: dict[JobStatus, int | None] = {JobStatus.PENDING: None, JobStatus.PROCESSING: None}
        db_ok = all(c.ok for c in checks if c.name == "database")
        if db_ok:
            for s in counts:
                counts[s] = await TranscodeJob.filter(status=s).count()
        return SystemStatus(
            status="ok" if all(c.ok for c in checks) else "degraded",
            version=mpr.__version__,
            executor=settings.executor,
            checks=[HealthCheck(name=c.name, ok=c.ok, detail=c.detail) for c in checks],
            pending_jobs=counts[JobStatus.PENDING],
            processing_jobs=counts[JobStatus.PROCESSING],
            pid=os.getpid(),
            api_processes=settings.api_processes,
            auto_preset=await _auto_preset_name(settings, db_ok),
        )


async def _auto_preset_name(settings: Settings, db_ok: bool) -> str | None:
    """The name of the preset MPR_AUTO_PRESET names (by name or id); its raw value when it names none
    or the database is down."""
    if not settings.auto_preset or not db_ok:
        return settings.auto_preset or None
    from mpr.auto import resolve_preset

    try:
        return (await resolve_preset(settings)).name
    except ConfigError:
        return settings.auto_preset


def _jobs_filter(status: str | None, asset_id: str | None, executor: str | None, search: str | None) -> Any:
    qs = TranscodeJob.all()
    if (st := _choice(status, JobStatus, "job status")) is not None:
        qs = qs.filter(status=st)
    if asset_id:
        qs = qs.filter(source_asset_id=parse_uuid(asset_id, "asset"))
    if executor:
        qs = qs.filter(executor=executor)
    if search:
        qs = qs.filter(Q(output_path__icontains=search) | Q(source_path__icontains=search))
    return qs


# --------------------------------------------------------------------------- mutations


def _service() -> Any:
    from mpr import service

    return service


async def _job(job: Any) -> Job:
    """A service result (a TranscodeJob, or an id) as the GraphQL type, re-read so the status is current."""
    jid = getattr(job, "id", job)
    row = await TranscodeJob.get_or_none(id=jid)
    if row is None:
        raise NotFound(f"job {jid} does not exist")
    return Job.from_model(row)


@strawberry.type
class Mutation:
    @strawberry.mutation(permission_classes=[TokenRequired], description="Register new files found under MEDIA_IN.")
    async def scan_media_folder(self) -> ScanResult:
        result = await _service().scan()
        return ScanResult(
            found=result.found,
            registered=result.registered,
            skipped=result.skipped,
            errors=[str(e) for e in getattr(result, "errors", []) or []],
            missing=result.missing,
            queued=result.queued,
            auto_skipped=result.auto_skipped,
        )

    @strawberry.mutation(permission_classes=[TokenRequired])
    async def create_job(self, input: CreateJobInput) -> Job:
        kwargs: dict[str, Any] = {
            "trim_start": input.trim_start,
            "trim_end": input.trim_end,
            "output_name": input.output_name,
            "priority": input.priority or 0,
            "chunked": bool(input.chunked),
            "chunk_seconds": input.chunk_seconds,
            "chunk_workers": input.chunk_workers,
            "executor": input.executor,
        }
        preset_id = parse_uuid(input.preset_id, "preset") if input.preset_id else None
        job = await _service().create_job(parse_uuid(input.source_asset_id, "asset"), preset_id, **kwargs)
        return await _job(job)

    @strawberry.mutation(permission_classes=[TokenRequired])
    async def cancel_job(self, id: strawberry.ID) -> Job:
        return await _job(await _service().cancel_job(parse_uuid(id, "job")))

    @strawberry.mutation(permission_classes=[TokenRequired])
    async def retry_job(self, id: strawberry.ID) -> Job:
        return await _job(await _service().retry_job(parse_uuid(id, "job")))

    @strawberry.mutation(
        permission_classes=[TokenRequired],
        description="Delete a finished job (completed, failed or cancelled) and its chunks; "
        "deleteOutput also removes its output file from MEDIA_OUT.",
    )
    async def delete_job(self, id: strawberry.ID, delete_output: bool = False) -> DeleteResult:
        await _service().delete_job(parse_uuid(id, "job"), delete_output=delete_output)
        return DeleteResult(ok=True)

    @strawberry.mutation(permission_classes=[TokenRequired])
    async def update_asset(self, id: strawberry.ID, input: UpdateAssetInput) -> Asset:
        asset_id = parse_uuid(id, "asset")
        await _service().update_asset(asset_id, input.comments)
        row = await MediaAsset.get_or_none(id=asset_id)
        if row is None:
            raise NotFound(f"asset {id} does not exist")
        return Asset.from_model(row)

    @strawberry.mutation(permission_classes=[TokenRequired])
    async def delete_asset(self, id: strawberry.ID) -> DeleteResult:
        await _service().delete_asset(parse_uuid(id, "asset"))
        return DeleteResult(ok=True)

    @strawberry.mutation(permission_classes=[TokenRequired])
    async def create_preset(self, input: PresetInput) -> Preset:
        preset = await _service().create_preset(_given(input))
        return Preset.from_model(await TranscodePreset.get(id=preset.id))

    @strawberry.mutation(permission_classes=[TokenRequired])
    async def update_preset(self, id: strawberry.ID, input: PresetUpdateInput) -> Preset:
        preset_id = parse_uuid(id, "preset")
        await _service().update_preset(preset_id, _given(input))
        return Preset.from_model(await TranscodePreset.get(id=preset_id))

    @strawberry.mutation(
        permission_classes=[TokenRequired], description="Delete a user preset (built-ins are protected)."
    )
    async def delete_preset(self, id: strawberry.ID) -> DeleteResult:
        await _service().delete_preset(parse_uuid(id, "preset"))
        return DeleteResult(ok=True)

    @strawberry.mutation(
        permission_classes=[TokenRequired],
        description="Put a built-in or plugin preset back to its shipped values (user presets: an error).",
    )
    async def reset_preset(self, id: strawberry.ID) -> Preset:
        row = await _service().reset_preset(parse_uuid(id, "preset"))
        return Preset.from_model(row)


# --------------------------------------------------------------------------- subscriptions


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=[TokenRequired],
        description="Live events of one job (or every job when jobId is omitted), resumable after a sequence number.",
    )
    async def job_events(
        self, job_id: strawberry.ID | None = None, after_sequence: int = 0
    ) -> AsyncGenerator[JobEventType, None]:
        key = None
        if job_id is not None:
            jid = parse_uuid(job_id, "job")
            if not await TranscodeJob.exists(id=jid):
                raise NotFound(f"job {job_id} does not exist")
            key = str(jid)
        async for event in bus.subscribe(key, after_sequence):
            yield JobEventType.from_event(event)


# --------------------------------------------------------------------------- errors + schema


def _is_user_error(error: GraphQLError) -> bool:
    original = error.original_error
    # No original error: a GraphQL syntax/validation error, whose message is already safe.
    # Tortoise's ValidationError: a user value broke a column rule (e.g. a filter longer than the column).
    from tortoise.exceptions import ValidationError as ColumnError

    return original is None or isinstance(original, (MprError, ColumnError))


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


class RejectNulCharacters(SchemaExtension):
    """Refuse NUL characters in any string (variables or literals): PostgreSQL cannot store them in text."""

    def on_execute(self) -> Any:
        ctx = self.execution_context
        document = ctx.graphql_document
        literals: list[str] = []
        if document is not None:
            from graphql.language import Visitor, visit

            class _Strings(Visitor):
                def enter_string_value(self, node: Any, *_: Any) -> None:
                    literals.append(node.value)

            visit(document, _Strings())
        if _has_nul(ctx.variables) or _has_nul(literals):
            from graphql import ExecutionResult

            error = GraphQLError("text must not contain NUL (\\u0000) characters")
            ctx.result = ExecutionResult(data=None, errors=[error])
        yield


SUBSCRIPTION_NEEDS_WEBSOCKET = "subscriptions need a WebSocket (graphql-transport-ws) at /graphql"


class SubscriptionsOnlyOverWebSocket(SchemaExtension):
    """Answer a subscription sent as an HTTP request with a clear error.

    Strawberry would run it as a query: the resolver's generator is not a value, so it
    failed as an internal error with a logged traceback. An HTTP request's context has a
    ``request``; the WebSocket's has a ``socket`` instead.
    """

    def on_execute(self) -> Any:
        ctx = self.execution_context
        context = ctx.context if isinstance(ctx.context, dict) else {}
        over_http = "request" in context and "socket" not in context
        if over_http and ctx.result is None and ctx.graphql_document is not None:
            from graphql import ExecutionResult
            from strawberry.types.graphql import OperationType

            try:
                subscription = ctx.operation_type == OperationType.SUBSCRIPTION
            except Exception:  # an unknown operationName: validation reports it
                subscription = False
            if subscription:
                ctx.result = ExecutionResult(data=None, errors=[GraphQLError(SUBSCRIPTION_NEEDS_WEBSOCKET)])
        yield


def _introspection_only(document: Any, operation_name: str | None) -> bool:
    """True for an operation asking only for ``__schema``/``__type``/``__typename`` (the schema is no secret)."""
    from graphql import FieldNode
    from graphql.utilities import get_operation_ast

    operation = get_operation_ast(document, operation_name) if document is not None else None
    if operation is None:
        return False
    selections = operation.selection_set.selections
    return all(isinstance(sel, FieldNode) and sel.name.value.startswith("__") for sel in selections)


class ReadsNeedToken(SchemaExtension):
    """Queries need the API token too when one is set, unless MPR_OPEN_READS (mutations: TokenRequired).

    The same error as a refused mutation (HTTP 200, ``errors[0].extensions.code`` UNAUTHENTICATED),
    and no data at all: nothing is resolved. Introspection alone stays open (GraphiQL's docs,
    schema-driven clients): it shows the schema, which is public, and no data.
    """

    def on_execute(self) -> Any:
        ctx = self.execution_context
        context = ctx.context if isinstance(ctx.context, dict) else {}
        if ctx.result is None and "settings" in context and reads_need_token(context["settings"]):
            from graphql import ExecutionResult
            from strawberry.types.graphql import OperationType

            try:
                query = ctx.operation_type == OperationType.QUERY
            except Exception:  # an unknown operationName: refused like a query, nothing runs
                query = True
            if query and not _has_token(context) and not _introspection_only(ctx.graphql_document, ctx.operation_name):
                error = GraphQLError(AUTH_MESSAGE, original_error=AuthError(AUTH_MESSAGE), extensions=dict(AUTH_CODE))
                ctx.result = ExecutionResult(data=None, errors=[error])
        yield


class MaskInternalErrors(MaskErrors):
    """Shows MprError messages; replaces anything else by "internal error (request id …)" and logs it."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=lambda e: not _is_user_error(e))

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        request_id = uuid.uuid4().hex[:12]
        original = error.original_error
        log.error(
            "internal error (request id %s) in GraphQL path %s",
            request_id,
            ".".join(str(p) for p in error.path or []),
            exc_info=(type(original), original, original.__traceback__) if original else None,
        )
        self.error_message = f"internal error (request id {request_id})"
        return super().anonymise_error(error)


class MprSchema(strawberry.Schema):
    """The schema; errors are logged once by :class:`MaskInternalErrors`, user errors at debug level."""

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        for error in errors:
            log.debug("GraphQL error: %s", error.message)


def _ignore_introspection(info: Any) -> bool:
    return info.field_name.startswith("__")


def make_schema(execution_context_class: type | None = FastExecutionContext) -> strawberry.Schema:
    """The GraphQL schema with error masking and a depth limit (introspection exempt).

    ``execution_context_class=None`` gives Strawberry's stock execution (the tests compare the two).
    """
    return MprSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        execution_context_class=execution_context_class,
        extensions=[
            # factories, not instances: Strawberry builds fresh extensions for every request
            functools.partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
            functools.partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
            functools.partial(QueryDepthLimiter, max_depth=MAX_DEPTH, should_ignore=_ignore_introspection),
            RejectNulCharacters,
            SubscriptionsOnlyOverWebSocket,
            ReadsNeedToken,
            MaskInternalErrors,
        ],
    )


schema = make_schema()


def context_getter_factory(settings_getter: Callable[[], Settings]) -> Callable[[], Any]:
    """A Litestar dependency building each request's context: settings and fresh DataLoaders."""

    async def get_context() -> dict[str, Any]:
        return {"settings": settings_getter(), "loaders": make_loaders()}

    return get_context


def make_graphql_controller(settings_getter: Callable[[], Settings] | None = None) -> type:
    """The Litestar controller serving ``/graphql`` (POST, GET with GraphiQL, graphql-transport-ws)."""
    import msgspec
    from strawberry.litestar import make_graphql_controller as _make

    base = _make(
        schema,
        path="/graphql",
        context_getter=context_getter_factory(settings_getter or get_settings),
        keep_alive=True,
        keep_alive_interval=15,
    )

    class GraphQLController(base):  # type: ignore[misc,valid-type]
        """Strawberry's controller with msgspec's JSON encoder (10x faster than ``json.dumps`` on a long list)."""

        def encode_json(self, data: object) -> bytes:
            return msgspec.json.encode(data)

    return GraphQLController
