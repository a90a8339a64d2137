"""The data model (Tortoise ORM; migrations in ``mpr/migrations`` applied by ``mpr migrate``).

Paths are stored relative to their media root (MEDIA_IN for assets,
MEDIA_OUT for job outputs) so the same database works on local folders,
S3 and GCS.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class AssetKind(StrEnum):
    VIDEO = "video"
    AUDIO = "audio"


class AssetStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    ERROR = "error"
    MISSING = "missing"  # a scan no longer found the file in MEDIA_IN; the next scan that finds it restores it


class AutoStatus(StrEnum):
    """Where an asset stands with automatic transcoding (``MPR_AUTO_PRESET``); null: not an auto asset."""

    PENDING = "pending"  # registered while MPR_AUTO_PRESET was set: one job is due once it is ready
    QUEUED = "queued"  # its job was created (the claim and the job row are one transaction)
    SKIPPED = "skipped"  # the preset does not apply, or the file already has its format


class JobStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ChunkStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class MediaAsset(Model):
    """A source video or audio file under MEDIA_IN."""

    id = fields.UUIDField(primary_key=True)
    path = fields.CharField(max_length=1024, unique=True, description="relative to MEDIA_IN")
    filename = fields.CharField(max_length=512)
    kind = fields.CharEnumField(AssetKind, max_length=16)
    size = fields.BigIntField(default=0)
    status = fields.CharEnumField(AssetStatus, max_length=16, default=AssetStatus.PENDING, db_index=True)
    error = fields.TextField(null=True)
    duration = fields.FloatField(null=True)
    container = fields.CharField(max_length=64, null=True)
    video_codec = fields.CharField(max_length=64, null=True)
    audio_codec = fields.CharField(max_length=64, null=True)
    width = fields.IntField(null=True)
    height = fields.IntField(null=True)
    fps = fields.FloatField(null=True)
    bitrate = fields.BigIntField(null=True)
    sample_rate = fields.IntField(null=True)
    channels = fields.IntField(null=True)
    probe = fields.JSONField(null=True)
    comments = fields.TextField(default="")
    auto = fields.CharEnumField(
        AutoStatus, max_length=16, null=True, db_index=True, description="automatic transcoding (MPR_AUTO_PRESET)"
    )
    auto_reason = fields.TextField(null=True, description="why automatic transcoding skipped it")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    jobs: fields.ReverseRelation[TranscodeJob]

    class Meta:
        table = "mpr_media_asset"
        ordering = ["path"]


class TranscodePreset(Model):
    """An encoding recipe. Extra options come only from a validated whitelist."""

    id = fields.UUIDField(primary_key=True)
    name = fields.CharField(max_length=128, unique=True)
    description = fields.TextField(default="")
    container = fields.CharField(max_length=16)
    video_codec = fields.CharField(max_length=32, null=True, description="encoder name, 'copy', or null for none")
    video_bitrate = fields.CharField(max_length=16, null=True)
    crf = fields.IntField(null=True)
    speed_preset = fields.CharField(max_length=16, null=True)
    width = fields.IntField(null=True)
    height = fields.IntField(null=True)
    fps = fields.FloatField(null=True)
    audio_codec = fields.CharField(max_length=32, null=True, description="encoder name, 'copy', or null for none")
    audio_bitrate = fields.CharField(max_length=16, null=True)
    sample_rate = fields.IntField(null=True)
    channels = fields.IntField(null=True)
    extra = fields.JSONField(default=dict, description="whitelisted extra options")
    source = fields.CharField(max_length=128, default="user", description="builtin, a plugin name, or user")
    modified = fields.BooleanField(default=False, description="a user edited this plugin preset")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "mpr_transcode_preset"
        ordering = ["name"]


class TranscodeJob(Model):
    """One transcode, trim or remux of one asset. Status changes only through ``mpr.jobs.transition``."""

    id = fields.UUIDField(primary_key=True)
    source_asset: fields.ForeignKeyNullableRelation[MediaAsset] = fields.ForeignKeyField(
        "models.MediaAsset", related_name="jobs", null=True, on_delete=fields.SET_NULL
    )
    source_path = fields.CharField(max_length=1024, default="", description="asset path at creation")
    preset: fields.ForeignKeyNullableRelation[TranscodePreset] = fields.ForeignKeyField(
        "models.TranscodePreset", related_name="jobs", null=True, on_delete=fields.SET_NULL
    )
    preset_snapshot = fields.JSONField(default=dict)
    output_path = fields.CharField(max_length=1024, unique=True, description="relative to MEDIA_OUT")
    output_size = fields.BigIntField(null=True)
    output_duration = fields.FloatField(null=True)
    output_probe = fields.JSONField(null=True)
    metrics = fields.JSONField(null=True, description="metrics object of the executor's completion callback")
    trim_start = fields.FloatField(null=True)
    trim_end = fields.FloatField(null=True)
    priority = fields.IntField(default=0)
    executor = fields.CharField(max_length=32, default="local")
    external_id = fields.CharField(max_length=512, null=True)
    status = fields.CharEnumField(JobStatus, max_length=16, default=JobStatus.PENDING, db_index=True)
    progress = fields.FloatField(default=0.0)
    speed = fields.FloatField(null=True)
    eta = fields.FloatField(null=True)
    error = fields.TextField(null=True)
    attempts = fields.IntField(default=0)
    chunked = fields.BooleanField(default=False)
    chunk_seconds = fields.FloatField(null=True)
    chunk_workers = fields.IntField(null=True)
    worker = fields.CharField(max_length=128, null=True, description="host:pid of the worker running it")
    heartbeat_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField(auto_now=True)

    chunks: fields.ReverseRelation[JobChunk]

    class Meta:
        table = "mpr_transcode_job"
        ordering = ["-created_at"]


class JobChunk(Model):
    """One time segment of a chunked job."""

    id = fields.IntField(primary_key=True)
    job: fields.ForeignKeyRelation[TranscodeJob] = fields.ForeignKeyField(
        "models.TranscodeJob", related_name="chunks", on_delete=fields.CASCADE
    )
    index = fields.IntField()
    start = fields.FloatField()  # seconds of the source (also for a trimmed job: its first chunk starts at trim_start)
    end = fields.FloatField()
    status = fields.CharEnumField(ChunkStatus, max_length=16, default=ChunkStatus.QUEUED)
    attempts = fields.IntField(default=0)
    worker = fields.CharField(max_length=64, null=True)
    output_key = fields.CharField(max_length=1024, null=True)
    error = fields.TextField(null=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "mpr_job_chunk"
        unique_together = (("job", "index"),)
        ordering = ["index"]


MODELS = (MediaAsset, TranscodePreset, TranscodeJob, JobChunk)
FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
