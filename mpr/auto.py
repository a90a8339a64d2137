"""Automatic transcoding of new media: ``MPR_AUTO_PRESET``.

When the variable names a preset (by name or id), every asset that a scan
(the watch folder, ``mpr scan``, ``scanMediaFolder``) or an upload newly
registers gets one job with that preset once it probes ``ready``, created by
:func:`mpr.service.create_job` (same checks, output naming and executor).

Exactly once per asset, whatever runs at the same time (two API processes,
``mpr scan`` next to the watch folder): registering marks the asset
``auto = pending`` (only the process whose INSERT created the row does), and
the job is created in the same transaction as the conditional update that
moves the mark from ``pending`` to ``queued``; a second claimer updates no
row and creates nothing. A crash before the commit leaves the mark
``pending`` and the next scan queues it. Rescans and restored missing assets
find the mark already set and do nothing.

An asset the preset cannot apply to (the service refuses it, e.g. an
audio-only file and a video preset) and, with ``MPR_AUTO_SKIP_MATCHING=1``
(the default), a file already in the preset's format is marked ``skipped``,
with the reason stored (``auto_reason``, GraphQL ``Asset.autoReason``), logged
at INFO and counted.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from tortoise.transactions import in_transaction

from mpr.errors import ConfigError, ExecutorError, MprError, NotFound, ValidationError
from mpr.models import AssetKind, AssetStatus, AutoStatus, MediaAsset, TranscodePreset
from mpr.presets import Preset, preset_from_model
from mpr.settings import Settings, get_settings
from mpr.storage import media_in

log = logging.getLogger(__name__)

# encoder -> the codec name the probe reports (others are the same: aac, flac, alac, pcm_s16le, ac3, mpeg4)
CODEC_NAMES = {
    "libx264": "h264",
    "libx265": "hevc",
    "libvpx-vp9": "vp9",
    "libvpx": "vp8",
    "libsvtav1": "av1",
    "libaom-av1": "av1",
    "libmp3lame": "mp3",
    "libopus": "opus",
    "libvorbis": "vorbis",
}

_reported: set[str] = set()  # MPR_AUTO_PRESET values already logged as unusable at ERROR (once, not every pass)


@dataclass
class AutoResult:
    """What one round of automatic queueing did: jobs created, assets skipped, errors."""

    queued: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


async def resolve_preset(settings: Settings | None = None) -> TranscodePreset:
    """The preset ``MPR_AUTO_PRESET`` names; ConfigError naming the variable and the presets there are."""
    from mpr.service import get_preset

    settings = settings or get_settings()
    try:
        return await get_preset(settings.auto_preset)
    except NotFound:
        names = await TranscodePreset.all().values_list("name", flat=True)
        known = ", ".join(sorted(names)) or "none: run mpr migrate"
        raise ConfigError(
            f"MPR_AUTO_PRESET={settings.auto_preset!r} is not a preset name or id (presets: {known})"
        ) from None


async def check_settings(settings: Settings | None = None) -> TranscodePreset | None:
    """Start-up check of MPR_AUTO_PRESET / MPR_AUTO_CHUNKED: the preset, None when off; ConfigError when unusable."""
    from mpr.executors import get_executor

    settings = settings or get_settings()
    if not settings.auto_preset:
        if settings.auto_chunked:
            log.warning("MPR_AUTO_CHUNKED=1 does nothing without MPR_AUTO_PRESET")
        return None
    row = await resolve_preset(settings)
    if settings.auto_chunked and row.video_codec in (None, "copy"):
        raise ConfigError(
            f"MPR_AUTO_CHUNKED=1 needs a preset that encodes video; MPR_AUTO_PRESET={settings.auto_preset!r} "
            f"({row.name}) does not"
        )
    get_executor(settings.executor)  # a missing executor plugin fails here, naming the package
    log.info(
        "automatic transcoding: new media get a %sjob with preset %s (MPR_AUTO_PRESET)%s",
        "chunked " if settings.auto_chunked else "",
        row.name,
        "" if settings.auto_skip_matching else "; files already in its format too",
    )
    return row


def codec_name(encoder: str | None) -> str | None:
    """The codec name a probe reports for what ``encoder`` writes (``libx264`` → ``h264``)."""
    return CODEC_NAMES.get(encoder, encoder) if encoder else None


def already_matches(asset: MediaAsset, preset: Preset) -> str | None:
    """Why ``asset`` already has ``preset``'s format (the skip reason), or None.

    A video preset: same container and same video codec. An audio-only preset:
    an audio-only asset with the same audio codec. Stream copy never matches.
    """
    if preset.video_codec not in (None, "copy"):
        codec = codec_name(preset.video_codec)
        if asset.kind is AssetKind.VIDEO and asset.container == preset.container and asset.video_codec == codec:
            return f"already {preset.container} with {codec} video"
    elif preset.video_codec is None and preset.audio_codec not in (None, "copy"):
        codec = codec_name(preset.audio_codec)
        if asset.kind is AssetKind.AUDIO and asset.audio_codec == codec:
            return f"already {codec} audio"
    return None


async def queue_pending(settings: Settings | None = None, asset_ids: Iterable[uuid.UUID] | None = None) -> AutoResult:
    """Create the auto job of every ready asset marked ``pending`` (or of those of ``asset_ids``).

    Never raises for one asset: refusals are skips, other failures are
    errors in the result (the asset stays ``pending`` for the next scan).
    """
    settings = settings or get_settings()
    result = AutoResult()
    if not settings.auto_preset:
        return result
    query = MediaAsset.filter(auto=AutoStatus.PENDING, status=AssetStatus.READY)
    if asset_ids is not None:
        query = query.filter(id__in=list(asset_ids))
    ids = await query.values_list("id", flat=True)
    if not ids:
        return result
    try:
        row = await resolve_preset(settings)
    except ConfigError as exc:
        result.errors.append(f"automatic transcoding: {exc}")
        first = settings.auto_preset not in _reported
        _reported.add(settings.auto_preset)
        log.log(logging.ERROR if first else logging.DEBUG, "automatic transcoding is stuck: %s", exc)
        return result
    _reported.discard(settings.auto_preset)
    for asset_id in ids:
        await _queue_one(asset_id, row, settings, result)
    return result


async def _queue_one(asset_id: uuid.UUID, row: TranscodePreset, settings: Settings, result: AutoResult) -> None:
    from mpr.executors import get_executor
    from mpr.service import _submit, create_job

    asset = await MediaAsset.get_or_none(id=asset_id)
    if asset is None or asset.auto is not AutoStatus.PENDING or asset.status is not AssetStatus.READY:
        return  # another process took it meanwhile
    preset = preset_from_model(row)
    reason = already_matches(asset, preset) if settings.auto_skip_matching else None
    if reason:
        await _skip(asset, row, f"{reason} (MPR_AUTO_SKIP_MATCHING=1)", result)
        return
    try:
        get_executor(settings.executor)  # a missing executor plugin: an error, the asset stays pending
        async with in_transaction():
            # the claim: only one transaction moves the mark from pending; the job row commits with it
            claimed = await MediaAsset.filter(id=asset_id, auto=AutoStatus.PENDING, status=AssetStatus.READY).update(
                auto=AutoStatus.QUEUED
            )
            if not claimed:
                return
            job = await create_job(asset_id, row.id, chunked=settings.auto_chunked, submit=False)
    except ValidationError as exc:  # the service's own refusal: the preset does not apply to this asset
        if not await asyncio.to_thread(media_in(settings).exists, asset.path):
            # not a refusal but a file gone for now (moved, being replaced): still pending (rolled
            # back); the next scan marks it missing, and queues it once it is back
            log.info("automatic transcoding of %s waits: the file is not in MEDIA_IN now", asset.path)
            return
        await _skip(asset, row, str(exc), result)
        return
    except Exception as exc:  # rolled back: still pending, the next scan tries again
        message = str(exc) if isinstance(exc, MprError) else f"{type(exc).__name__}: {exc}"
        log.warning("automatic transcoding of %s failed (tried again on the next scan): %s", asset.path, message)
        result.errors.append(f"{asset.path}: automatic transcoding failed: {message}")
        return
    result.queued += 1
    log.info("automatic transcoding: job %s for %s with preset %s -> %s", job.id, asset.path, row.name, job.output_path)
    try:
        await _submit(job)  # after the commit: the executor's worker must see the row
    except ExecutorError as exc:  # the job is FAILED with the reason; a retry resubmits it
        result.errors.append(f"{asset.path}: {exc}")


async def _skip(asset: MediaAsset, row: TranscodePreset, reason: str, result: AutoResult) -> None:
    """Mark a pending asset ``skipped`` with the reason (conditionally: once) and log why at INFO."""
    if await MediaAsset.filter(id=asset.id, auto=AutoStatus.PENDING).update(
        auto=AutoStatus.SKIPPED, auto_reason=reason
    ):
        result.skipped += 1
        log.info("automatic transcoding: skipped %s (preset %s): %s", asset.path, row.name, reason)
