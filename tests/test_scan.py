"""Scanning MEDIA_IN: extensions, probing, bad files, idempotence, and any storage backend."""

from __future__ import annotations

import shutil
from typing import ClassVar

import pytest

from mpr.errors import NotFound, ValidationError
from mpr.models import AssetKind, AssetStatus, MediaAsset
from mpr.plugins import register_plugin, unregister_plugin
from mpr.scan import is_media, register, scan
from tests import core_helpers
from tests.core_helpers import put_media


def test_extensions_are_the_seeds_and_case_insensitive() -> None:
    for name in (
        "a.mp4",
        "b.MKV",
        "c.avi",
        "d.mov",
        "e.webm",
        "f.flv",
        "g.wmv",
        "h.M4V",
        "i.mp3",
        "j.WAV",
        "k.flac",
        "l.aac",
        "m.ogg",
        "n.m4a",
        "dir/o.Mp4",
        "p.ts",
        "q.mka",
        "r.opus",
        "s.wma",
        "t.aiff",
        "u.mpg",
    ):
        assert is_media(name), name
    from mpr.models import AssetKind
    from mpr.scan import kind_of

    assert [kind_of(n) for n in ("x.mka", "x.opus", "x.wma", "x.aiff")] == [AssetKind.AUDIO] * 4
    assert [kind_of(n) for n in ("x.ts", "x.m2ts", "x.mpg", "x.ogv")] == [AssetKind.VIDEO] * 4
    for name in ("a.txt", "b.jpg", "mp4", "c.mp4.part", ".hidden.mp4", "noext"):
        assert not is_media(name), name


async def test_scan_registers_probes_and_reports(db, media, clips) -> None:
    put_media(media, clips["video"], "movies/one.mp4")
    put_media(media, clips["video"], "TWO.MP4")
    put_media(media, clips["audio"], "music/tone.mp3")
    put_media(media, clips["truncated"], "broken/truncated.mp4")
    put_media(media, clips["empty"], "broken/empty.mkv")
    put_media(media, clips["garbage"], "broken/garbage.avi")
    (media["in"] / "notes.txt").write_text("not media")
    (media["in"] / "cover.jpg").write_bytes(b"\xff\xd8")

    result = await scan()
    assert (result.found, result.registered, result.skipped) == (6, 6, 0)
    assert len(result.errors) == 3 and all("broken/" in e for e in result.errors)

    one = await MediaAsset.get(path="movies/one.mp4")
    assert (one.status, one.kind, one.filename) == (AssetStatus.READY, AssetKind.VIDEO, "one.mp4")
    assert (one.width, one.height, one.fps, one.video_codec, one.audio_codec) == (320, 240, 25.0, "h264", "aac")
    assert one.duration == pytest.approx(3.0, abs=0.05) and one.size == clips["video"].stat().st_size
    assert one.bitrate and one.sample_rate == 48000 and one.channels == 1 and one.probe["streams"]
    tone = await MediaAsset.get(path="music/tone.mp3")
    assert (tone.kind, tone.audio_codec, tone.width) == (AssetKind.AUDIO, "mp3", None)

    for key, needle in (
        ("broken/truncated.mp4", "not a readable media file"),
        ("broken/empty.mkv", "empty (0 bytes)"),
        ("broken/garbage.avi", "not a readable media file"),
    ):
        bad = await MediaAsset.get(path=key)
        assert bad.status is AssetStatus.ERROR and needle in bad.error, (key, bad.error)

    again = await scan()
    assert (again.found, again.registered, again.skipped, again.errors) == (6, 0, 6, [])
    assert await MediaAsset.all().count() == 6

    put_media(media, clips["audio"], "music/new.MP3")
    third = await scan()
    assert (third.found, third.registered, third.skipped) == (7, 1, 6)

    # a file scanned while still being copied is probed again once it changed
    put_media(media, clips["video"], "broken/truncated.mp4")
    fourth = await scan()
    assert (fourth.registered, fourth.updated, fourth.errors) == (0, 1, [])
    fixed = await MediaAsset.get(path="broken/truncated.mp4")
    assert (fixed.status, fixed.error, fixed.width) == (AssetStatus.READY, None, 320)
    assert fixed.size == clips["video"].stat().st_size


async def test_register_refuses_unknown_extensions_missing_files_and_traversal(sqlite_db, media) -> None:
    (media["in"] / "doc.pdf").write_bytes(b"%PDF")
    with pytest.raises(ValidationError, match="not a supported media file"):
        await register("doc.pdf")
    with pytest.raises(NotFound):
        await register("missing.mp4")
    from mpr.errors import StorageError

    for key in ("../etc/passwd", "/etc/passwd.mp4", "../../x.mp4"):
        with pytest.raises(StorageError):
            await register(key)


class MemoryStorage(core_helpers.MemoryStorage):
    objects: ClassVar[dict[str, bytes]] = {}


def MemoryPlugin():  # noqa: N802 - stands for the plugin class it used to be
    return core_helpers.storage_plugin("mem", MemoryStorage)


async def test_scan_walks_through_the_storage_backend(sqlite_db, media, monkeypatch, clips) -> None:
    MemoryStorage.objects = {
        "a/clip.mp4": clips["video"].read_bytes(),
        "b/bad.mp3": b"junk" * 100,
        "readme.md": b"# hi",
    }
    plugin = MemoryPlugin()
    register_plugin(plugin, name="mpr-mem")
    monkeypatch.setenv("MEDIA_IN", "mem://bucket/in/")
    from mpr.settings import get_settings
    from mpr.storage import reset_storage

    get_settings.cache_clear()
    reset_storage()
    try:
        result = await scan()
    finally:
        unregister_plugin(plugin)
    assert (result.found, result.registered) == (2, 2)
    assert (await MediaAsset.get(path="a/clip.mp4")).status is AssetStatus.READY
    assert (await MediaAsset.get(path="b/bad.mp3")).status is AssetStatus.ERROR
    shutil.rmtree(media["in"], ignore_errors=True)
