"""A scan marks assets whose file left MEDIA_IN ``missing``, counts them, and restores them when it is back."""

from __future__ import annotations

import datetime as dt
import os
from typing import ClassVar

import pytest

from mpr import service
from mpr.errors import ValidationError
from mpr.models import AssetStatus, MediaAsset, TranscodeJob
from mpr.plugins import register_plugin, unregister_plugin
from mpr.presets import sync_presets
from mpr.scan import MISSING_ERROR, register, scan
from mpr.storage import reset_storage
from tests.core_helpers import MemoryStorage, put_media, storage_plugin


async def test_scan_marks_a_gone_file_missing_and_restores_it_when_it_is_back(db, media, clips) -> None:
    put_media(media, clips["video"], "keep.mp4")
    put_media(media, clips["video"], "movies/gone.mp4")
    put_media(media, clips["audio"], "music/tone.mp3")
    first = await scan()
    assert (first.found, first.registered, first.missing) == (3, 3, 0)
    gone = await MediaAsset.get(path="movies/gone.mp4")
    await MediaAsset.filter(id=gone.id).update(comments="a note that must survive")

    moved = media["in"] / "movies" / "gone.mp4"
    parked = media["var"] / "parked.mp4"
    os.replace(moved, parked)
    second = await scan()
    assert (second.found, second.registered, second.skipped, second.missing, second.restored) == (2, 0, 2, 1, 0)
    asset = await MediaAsset.get(id=gone.id)
    assert (asset.status, asset.error) == (AssetStatus.MISSING, MISSING_ERROR)
    assert asset.comments == "a note that must survive"  # the asset is kept, only flagged
    assert asset.duration == pytest.approx(gone.duration)  # what was probed stays for reference
    others = await MediaAsset.exclude(id=gone.id).values_list("status", flat=True)
    assert set(others) == {AssetStatus.READY}

    third = await scan()  # still gone: counted again, not marked twice
    assert (third.missing, third.restored) == (1, 0)
    assert (await MediaAsset.get(id=gone.id)).updated_at == asset.updated_at

    os.replace(parked, moved)
    fourth = await scan()
    assert (fourth.found, fourth.registered, fourth.missing, fourth.restored) == (3, 0, 0, 1)
    back = await MediaAsset.get(id=gone.id)
    assert (back.status, back.error, back.size) == (AssetStatus.READY, None, moved.stat().st_size)
    assert await MediaAsset.all().count() == 3  # restored in place, not registered again


async def test_a_missing_file_that_comes_back_broken_is_restored_as_error(db, media, clips) -> None:
    put_media(media, clips["video"], "clip.mp4")
    await scan()
    (media["in"] / "clip.mp4").unlink()
    assert (await scan()).missing == 1
    put_media(media, clips["garbage"], "clip.mp4")
    result = await scan()
    assert (result.missing, result.restored) == (0, 1)
    assert len(result.errors) == 1 and result.errors[0].startswith("clip.mp4: ")
    asset = await MediaAsset.get(path="clip.mp4")
    assert asset.status is AssetStatus.ERROR and asset.error and asset.error != MISSING_ERROR


async def test_an_asset_in_error_whose_file_goes_is_missing_too(db, media, clips) -> None:
    put_media(media, clips["truncated"], "broken.mp4")
    await scan()
    assert (await MediaAsset.get(path="broken.mp4")).status is AssetStatus.ERROR
    (media["in"] / "broken.mp4").unlink()
    assert (await scan()).missing == 1
    assert (await MediaAsset.get(path="broken.mp4")).status is AssetStatus.MISSING


async def test_an_empty_media_in_marks_every_asset_missing(db, media, clips) -> None:
    for name in ("a.mp4", "b/c.mp4", "d.mp3"):
        put_media(media, clips["video"] if name.endswith("mp4") else clips["audio"], name)
    await scan()
    for path in list(media["in"].rglob("*")):
        if path.is_file():
            path.unlink()
    result = await scan()
    assert (result.found, result.missing) == (0, 3)


async def test_an_asset_registered_after_the_listing_started_is_not_marked(db, media, clips) -> None:
    # an upload registering its asset while a scan runs: the scan's listing could not see its file
    put_media(media, clips["video"], "old.mp4")
    await scan()
    asset, _ = await register("old.mp4")
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    await MediaAsset.filter(id=asset.id).update(created_at=future)
    (media["in"] / "old.mp4").unlink()
    assert (await scan()).missing == 0
    assert (await MediaAsset.get(id=asset.id)).status is AssetStatus.READY


async def test_create_job_refuses_a_missing_asset_with_a_clear_error(db, media, clips) -> None:
    await sync_presets()
    put_media(media, clips["video"], "clip.mp4")
    await scan()
    asset = await MediaAsset.get(path="clip.mp4")
    (media["in"] / "clip.mp4").unlink()
    await scan()
    for preset in (None, "h264-720p"):
        with pytest.raises(ValidationError) as err:
            await service.create_job(asset.id, preset, submit=False, executor="inline")
        assert str(err.value) == (
            "the source file clip.mp4 is missing from MEDIA_IN (a scan no longer found it); put it back and scan again"
        )
    assert await TranscodeJob.all().count() == 0
    put_media(media, clips["video"], "clip.mp4")
    await scan()
    job = await service.create_job(asset.id, None, submit=False, executor="inline")
    assert job.source_path == "clip.mp4"


def test_cli_scan_prints_the_missing_count(media, clips, capsys) -> None:
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    from mpr.cli import main

    EXECUTOR_CACHE.clear()  # a PostgreSQL test before may have cached its SQL dialect
    put_media(media, clips["video"], "a.mp4")
    put_media(media, clips["video"], "b.mp4")
    assert main(["scan"]) == 0
    assert "found 2, registered 2, skipped 0, missing 0" in capsys.readouterr().out
    (media["in"] / "b.mp4").unlink()
    assert main(["scan"]) == 0
    assert "found 1, registered 0, skipped 1, missing 1" in capsys.readouterr().out
    put_media(media, clips["video"], "b.mp4")
    assert main(["scan"]) == 0
    assert "found 2, registered 0, skipped 2, back 1, missing 0" in capsys.readouterr().out


@pytest.fixture
async def app(monkeypatch):
    from testkit import serving

    async for start in serving(monkeypatch):
        yield start


async def test_graphql_scan_reports_missing(db, media, clips, app) -> None:
    put_media(media, clips["video"], "a.mp4")
    put_media(media, clips["video"], "b.mp4")
    api = await app()
    query = "mutation { scanMediaFolder { found registered skipped missing } }"
    assert (await api.ok(query))["scanMediaFolder"] == {"found": 2, "registered": 2, "skipped": 0, "missing": 0}
    (media["in"] / "a.mp4").unlink()
    assert (await api.ok(query))["scanMediaFolder"] == {"found": 1, "registered": 0, "skipped": 1, "missing": 1}
    assets = await api.ok('{ assets(status: "missing") { path status error } }')
    assert assets["assets"] == [{"path": "a.mp4", "status": "missing", "error": MISSING_ERROR}]


class BucketStorage(MemoryStorage):
    """A remote-like backend (no local paths) under the ``bucket://`` scheme."""

    objects: ClassVar[dict[str, bytes]] = {}


def BucketPlugin():  # noqa: N802 - reads like the plugin class it makes
    return storage_plugin("bucket", BucketStorage)


async def test_missing_files_of_a_remote_storage_listing(db, media, clips, monkeypatch) -> None:
    from mpr.settings import get_settings

    video = clips["video"].read_bytes()
    BucketStorage.objects = {"in/a.mp4": video, "in/b.mp4": video, "notes.txt": b"x"}
    plugin = BucketPlugin()
    register_plugin(plugin, name="mpr-bucket")
    monkeypatch.setenv("MEDIA_IN", "bucket://media/")
    get_settings.cache_clear()
    reset_storage()
    try:
        assert (await scan()).registered == 2
        del BucketStorage.objects["in/a.mp4"]
        result = await scan()
        assert (result.found, result.missing) == (1, 1)
        assert (await MediaAsset.get(path="in/a.mp4")).status is AssetStatus.MISSING
        assert (await MediaAsset.get(path="in/b.mp4")).status is AssetStatus.READY
        BucketStorage.objects["in/a.mp4"] = video
        result = await scan()
        assert (result.missing, result.restored) == (0, 1)
        assert (await MediaAsset.get(path="in/a.mp4")).status is AssetStatus.READY
    finally:
        unregister_plugin(plugin)
        reset_storage()


async def test_a_failing_listing_marks_nothing(db, media, clips, monkeypatch) -> None:
    from mpr.settings import get_settings

    BucketStorage.objects = {"a.mp4": clips["video"].read_bytes()}
    plugin = BucketPlugin()
    register_plugin(plugin, name="mpr-bucket")
    monkeypatch.setenv("MEDIA_IN", "bucket://media/")
    get_settings.cache_clear()
    reset_storage()

    def broken_list(self, prefix: str = ""):
        raise OSError("bucket unreachable")

    try:
        await scan()
        monkeypatch.setattr(BucketStorage, "list", broken_list)
        with pytest.raises(OSError, match="bucket unreachable"):
            await scan()
        assert (await MediaAsset.get(path="a.mp4")).status is AssetStatus.READY
    finally:
        unregister_plugin(plugin)
        reset_storage()
