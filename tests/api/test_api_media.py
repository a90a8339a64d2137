"""/media/in, /media/out (Range, no path escape), thumbnails, health checks and the static UIs."""

from __future__ import annotations

import pytest

from .conftest import ESCAPING_MEDIA_PATHS, make_asset, put_clip, raw_request


async def test_media_in_serves_whole_file_and_ranges(api, media, clips):
    data = put_clip(media, clips["video"], "dir/sample.mp4").read_bytes()
    r = await api.http.get("/media/in/dir/sample.mp4")
    assert r.status_code == 200 and r.content == data
    assert r.headers["accept-ranges"] == "bytes" and r.headers["content-type"] == "video/mp4"
    r = await api.http.get("/media/in/dir/sample.mp4", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    r = await api.http.get("/media/in/dir/sample.mp4", headers={"Range": "bytes=-50"})
    assert r.status_code == 206 and r.content == data[-50:]
    r = await api.http.get("/media/in/dir/sample.mp4", headers={"Range": "bytes=1000-"})
    assert r.status_code == 206 and r.content == data[1000:]
    r = await api.http.get("/media/in/dir/sample.mp4", headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"


async def test_media_out_and_missing_files(api, media):
    (media["out"] / "x.webm").write_bytes(b"webm-bytes")
    r = await api.http.get("/media/out/x.webm")
    assert r.status_code == 200 and r.content == b"webm-bytes"
    assert (await api.http.get("/media/out/nope.mp4")).status_code == 404
    assert (await api.http.get("/media/in/x.webm")).status_code == 404


@pytest.mark.parametrize("path", ESCAPING_MEDIA_PATHS)
async def test_path_escape_is_refused(api, media, path):
    (media["out"] / "x.webm").write_bytes(b"secret")
    status = await raw_request(api, "GET", path)
    assert status in (400, 404), (path, status)


async def test_symlink_out_of_root_is_refused(api, media, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (media["in"] / "link.mp4").symlink_to(outside)
    r = await api.http.get("/media/in/link.mp4")
    assert r.status_code in (400, 404) and b"secret" not in r.content


async def test_thumbnail_is_a_cached_jpeg(api, media, clips):
    put_clip(media, clips["video"], "thumb.mp4")
    asset = await make_asset("thumb.mp4", duration=3.0)
    r = await api.http.get(f"/api/assets/{asset.id}/thumbnail", params={"t": 1.2, "w": 160})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content[:2] == b"\xff\xd8"
    cached = list((media["var"] / "thumbs" / str(asset.id)).glob("*.jpg"))
    assert [p.name for p in cached] == ["1.2_160.jpg"]
    again = await api.http.get(f"/api/assets/{asset.id}/thumbnail", params={"t": 1.2, "w": 160})
    assert again.content == r.content
    assert (await api.http.get("/api/assets/nope/thumbnail")).status_code == 404
    audio = await make_asset("a.mp3", kind="audio")
    assert (await api.http.get(f"/api/assets/{audio.id}/thumbnail")).status_code == 404


async def test_healthz_and_readyz(api, media):
    r = await api.http.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = await api.http.get("/readyz")
    assert r.status_code == 200, r.text
    assert set(r.json()["checks"]) == {"database", "queue", "storage"}


async def test_readyz_is_503_when_the_database_is_down(api):
    from tortoise import Tortoise

    conn = Tortoise.get_connection("default")
    real = conn.execute_query

    async def down(*args, **kwargs):
        raise ConnectionError("database is down")

    conn.execute_query = down
    try:
        r = await api.http.get("/readyz")
        status = (await api.ok("{ systemStatus { status checks { name ok } } }"))["systemStatus"]
    finally:
        conn.execute_query = real
    assert r.status_code == 503
    assert r.json()["checks"]["database"]["ok"] is False
    assert status["status"] == "degraded"


async def test_readyz_is_503_when_storage_is_missing(api, media):
    media["out"].rmdir()
    r = await api.http.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["storage"]["ok"] is False


async def test_a_fresh_setup_is_ready_before_its_first_job(start_api, tmp_path):
    """The app creates missing local media folders at start (make run on a fresh clone has no media/out)."""
    fresh_in, fresh_out = tmp_path / "fresh" / "in", tmp_path / "fresh" / "out"
    api = await start_api(MEDIA_IN=str(fresh_in), MEDIA_OUT=str(fresh_out))
    r = await api.http.get("/readyz")
    assert r.status_code == 200, r.text
    assert fresh_in.is_dir() and fresh_out.is_dir()


async def test_a_media_folder_that_cannot_be_created_is_reported_not_fatal(start_api, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    api = await start_api(MEDIA_OUT=str(blocker / "out"))
    r = await api.http.get("/readyz")
    assert r.status_code == 503
    assert "is not a directory" in r.json()["checks"]["storage"]["detail"]
    assert (await api.http.get("/healthz")).status_code == 200


async def test_ui_routes_serve_built_files_or_a_hint(api):
    from mpr.api.app import STATIC_DIR

    r = await api.http.get("/")
    assert r.status_code == 200 and "<html" in r.text.lower()
    r = await api.http.get("/chunker/")
    assert r.status_code == 200
    if (STATIC_DIR / "index.html").is_file():
        assert "make ui" not in r.text
    else:
        assert "make ui" in r.text
