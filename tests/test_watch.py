"""The watch folder's pieces: a file is probed only once it stopped changing; one scan lease per database."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

import pytest
from tortoise import Tortoise

from mpr.models import AssetStatus, MediaAsset
from mpr.scan import scan
from mpr.settings import get_settings
from mpr.watch import LEASE_KEY, ScanLease, scan_loop


async def test_a_growing_file_waits_until_it_looked_the_same_twice(db, media, clips):
    data = clips["video"].read_bytes()
    path = media["in"] / "growing.mp4"
    path.write_bytes(data[:4096])
    first = await scan(previous_looks={})
    assert (first.registered, first.waiting) == (0, 1) and await MediaAsset.all().count() == 0
    with path.open("ab") as fh:
        fh.write(data[4096:20000])
    second = await scan(previous_looks=first.looks)
    assert (second.registered, second.waiting) == (0, 1) and await MediaAsset.all().count() == 0
    with path.open("ab") as fh:
        fh.write(data[20000:])
    third = await scan(previous_looks=second.looks)
    assert (third.registered, third.waiting) == (0, 1)
    fourth = await scan(previous_looks=third.looks)  # unchanged since the last look: probed now
    assert (fourth.registered, fourth.waiting, fourth.errors) == (1, 0, [])
    asset = await MediaAsset.get(path="growing.mp4")
    assert (asset.status, asset.size, asset.width) == (AssetStatus.READY, len(data), 320)
    fifth = await scan(previous_looks=fourth.looks)
    assert (fifth.registered, fifth.skipped, fifth.waiting) == (0, 1, 0)


async def test_a_ready_asset_whose_file_changed_is_probed_again(db, media, clips):
    path = media["in"] / "clip.mp4"
    path.write_bytes(clips["video"].read_bytes()[:4096])  # a plain scan during a copy: error
    await scan()
    assert (await MediaAsset.get(path="clip.mp4")).status is AssetStatus.ERROR
    path.write_bytes(clips["audio"].read_bytes())  # replaced while scans run
    assert (await scan()).updated == 1
    replaced = await MediaAsset.get(path="clip.mp4")
    assert (replaced.status, replaced.audio_codec) == (AssetStatus.READY, "mp3")
    path.write_bytes(clips["video"].read_bytes())  # a ready asset whose file changed again
    assert (await scan()).updated == 1
    again = await MediaAsset.get(path="clip.mp4")
    assert (again.status, again.video_codec, again.size) == (AssetStatus.READY, "h264", path.stat().st_size)


async def test_one_scan_lease_in_the_var_dir(media):
    settings = get_settings()
    first, second = ScanLease(settings, ttl=60), ScanLease(settings, ttl=60)
    try:
        assert await first.take() is True
        assert await first.take() is True  # renewing is taking again
        assert await second.take() is False
        await first.give_back()
        assert await second.take() is True
        assert await first.take() is False
    finally:
        await first.give_back()
        await second.give_back()


async def test_one_scan_lease_in_redis(media, redis_url, monkeypatch):
    import redis.asyncio as aioredis

    monkeypatch.setenv("MPR_REDIS_URL", redis_url)
    get_settings.cache_clear()
    settings = get_settings()
    client = aioredis.from_url(redis_url)
    await client.delete(LEASE_KEY)
    first, second = ScanLease(settings, ttl=60), ScanLease(settings, ttl=60)
    try:
        assert await first.take() is True
        assert await second.take() is False
        assert await client.get(LEASE_KEY) == first.token.encode()
        assert 0 < await client.pttl(LEASE_KEY) <= 60_000
        await first.give_back()
        assert await second.take() is True
        await first.give_back()  # not its lease any more: leaves it alone
        assert await client.get(LEASE_KEY) == second.token.encode()
    finally:
        await second.give_back()
        assert await client.get(LEASE_KEY) is None
        await client.aclose()


def test_scan_interval_and_upload_limit_settings():
    from mpr.errors import ConfigError
    from mpr.settings import Settings

    defaults = Settings.from_env({})
    assert (defaults.scan_interval, defaults.upload_max_bytes) == (60.0, 20 * 1024**3)
    custom = Settings.from_env({"MPR_SCAN_INTERVAL": "0", "MPR_UPLOAD_MAX_BYTES": "1000"})
    assert (custom.scan_interval, custom.upload_max_bytes) == (0.0, 1000)
    for env in ({"MPR_SCAN_INTERVAL": "-1"}, {"MPR_SCAN_INTERVAL": "0.01"}, {"MPR_UPLOAD_MAX_BYTES": "0"}):
        with pytest.raises(ConfigError, match=next(iter(env))):
            Settings.from_env(env)


async def _until(condition, deadline: float = 60.0) -> None:
    give_up = time.monotonic() + deadline
    while not await condition():
        assert time.monotonic() < give_up, "condition never met"
        await asyncio.sleep(0.05)


async def test_the_watch_loop_survives_failing_passes_and_logs_them_once(sqlite_db, media, clips, caplog):
    connection = Tortoise.get_connection("default")
    await connection.execute_script("ALTER TABLE mpr_media_asset RENAME TO mpr_media_asset_away")  # DB errors
    caplog.set_level(logging.DEBUG, logger="mpr.watch")
    task = asyncio.create_task(scan_loop(0.05, get_settings()))
    try:

        async def failed_a_few_times() -> bool:
            return sum("failed again" in r.getMessage() for r in caplog.records) >= 3

        await _until(failed_a_few_times)
        await connection.execute_script("ALTER TABLE mpr_media_asset_away RENAME TO mpr_media_asset")
        shutil.copy(clips["video"], media["in"] / "late.mp4")

        async def registered() -> bool:
            return await MediaAsset.filter(path="late.mp4", status=AssetStatus.READY).exists()

        await _until(registered)  # the loop went on after the failures
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and errors[0].exc_info is not None  # once, with the traceback
    assert any("works again" in r.getMessage() for r in caplog.records)


async def test_a_redis_lease_is_renewed_while_a_long_pass_runs(media, redis_url, monkeypatch):
    import redis.asyncio as aioredis

    monkeypatch.setenv("MPR_REDIS_URL", redis_url)
    get_settings.cache_clear()
    settings = get_settings()
    client = aioredis.from_url(redis_url)
    await client.delete(LEASE_KEY)
    # renewed every ttl/3: a 3 s ttl leaves a busy machine 2 s of slack per renewal
    holder, other = ScanLease(settings, ttl=3), ScanLease(settings, ttl=3)
    try:
        assert await holder.take() is True
        keeping = asyncio.create_task(holder.keep())
        await asyncio.sleep(7.0)  # a pass more than twice the ttl
        assert await other.take() is False  # renewed meanwhile: still the holder's
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)
        assert await client.get(LEASE_KEY) == holder.token.encode()
    finally:
        await holder.give_back()
        await other.give_back()
        await client.aclose()
