"""The seed's portability promise: a library scanned in a local folder, moved to a bucket, rescanned
from the bucket, changes no database row (asset paths are relative to MEDIA_IN)."""

from __future__ import annotations

import shutil

from mpr.models import MediaAsset
from mpr.settings import get_settings
from mpr.storage import reset_storage
from testkit import make_clip


async def rows() -> dict[str, dict]:
    return {
        a.path: {k: getattr(a, k) for k in MediaAsset._meta.fields_map if k != "jobs"} for a in await MediaAsset.all()
    }


async def test_moving_a_library_from_a_folder_to_a_bucket_changes_no_row(
    sqlite_db, media, clips, moto_server, s3_bucket, monkeypatch
) -> None:
    from mpr import service

    library = media["in"]
    shutil.copy(clips["video"], library / "clip.mp4")
    make_clip(library / "shows" / "s01" / "ep 1 (final).mp4", seconds=1.0)
    (library / "music").mkdir()
    shutil.copy(clips["audio"], library / "music" / "tone.mp3")
    shutil.copy(clips["garbage"], library / "broken.mp4")  # an error asset moves too
    (library / "notes.txt").write_text("not media")

    first = await service.scan()
    assert (first.found, first.registered) == (4, 4)
    before = await rows()
    assert set(before) == {"clip.mp4", "shows/s01/ep 1 (final).mp4", "music/tone.mp3", "broken.mp4"}
    assert before["broken.mp4"]["status"] == "error" and before["clip.mp4"]["status"] == "ready"

    # move the library into the bucket, under a prefix, and point MEDIA_IN at it
    s3 = moto_server.client("s3")
    for path in sorted(p for p in library.rglob("*") if p.is_file()):
        s3.upload_file(str(path), s3_bucket, "media/" + path.relative_to(library).as_posix())
    shutil.rmtree(library)
    monkeypatch.setenv("MEDIA_IN", f"s3://{s3_bucket}/media/")
    get_settings.cache_clear()
    reset_storage()

    second = await service.scan()
    assert (second.found, second.registered, second.skipped) == (4, 0, 4)
    assert await rows() == before

    # and an asset added in the bucket gets the same kind of relative path
    s3.upload_file(str(clips["audio"]), s3_bucket, "media/music/new tone.mp3")
    third = await service.scan()
    assert third.registered == 1
    added = await MediaAsset.get(path="music/new tone.mp3")
    assert added.status == "ready" and added.duration == before["music/tone.mp3"]["duration"]
