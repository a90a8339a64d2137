"""HEAD on /media/in, /media/out and thumbnails: GET's status and headers, no body, over real HTTP."""

from __future__ import annotations

import asyncio
import urllib.parse

import pytest
from mpr_storage_s3.testing import moto_server, s3_bucket  # noqa: F401  (fixtures)

from .conftest import ESCAPING_MEDIA_PATHS, make_asset, put_clip, raw_request

COMPARED = ("content-length", "content-type", "accept-ranges", "content-range", "cache-control", "location")


def _same_headers(get, head) -> None:
    assert head.status_code == get.status_code, (get.status_code, head.status_code)
    for name in COMPARED:
        assert head.headers.get(name) == get.headers.get(name), (name, get.headers.get(name), head.headers.get(name))
    assert head.content == b""


@pytest.mark.parametrize("range_header", [None, "bytes=100-199", "bytes=-50", "bytes=1000-", "bytes=0-", "too-big"])
async def test_head_media_in_matches_get(api, media, clips, range_header):
    data = put_clip(media, clips["video"], "dir/sample.mp4").read_bytes()
    if range_header == "too-big":
        range_header = f"bytes={len(data)}-"
    headers = {"Range": range_header} if range_header else {}
    get = await api.http.get("/media/in/dir/sample.mp4", headers=headers)
    head = await api.http.head("/media/in/dir/sample.mp4", headers=headers)
    _same_headers(get, head)
    if range_header is None:
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        assert head.headers["accept-ranges"] == "bytes" and head.headers["content-type"] == "video/mp4"
    elif range_header == "bytes=100-199":
        assert head.status_code == 206 and head.headers["content-length"] == "100"
        assert head.headers["content-range"] == f"bytes 100-199/{len(data)}"
    elif range_header.endswith(f"{len(data)}-"):
        assert head.status_code == 416 and head.headers["content-range"] == f"bytes */{len(data)}"
    else:
        assert head.status_code == 206


async def test_head_media_out_missing_and_empty_files(api, media):
    (media["out"] / "x.webm").write_bytes(b"webm-bytes")
    (media["out"] / "empty.mp4").write_bytes(b"")
    for path, status, length in (("/media/out/x.webm", 200, "10"), ("/media/out/empty.mp4", 200, "0")):
        get, head = await api.http.get(path), await api.http.head(path)
        _same_headers(get, head)
        assert head.status_code == status and head.headers["content-length"] == length
    for path in ("/media/out/nope.mp4", "/media/in/x.webm", "/media/in/"):
        get, head = await api.http.get(path), await api.http.head(path)
        assert head.status_code == get.status_code and head.status_code in (400, 404), path
        assert head.content == b""


@pytest.mark.parametrize("path", ESCAPING_MEDIA_PATHS)
async def test_head_path_escape_is_refused_exactly_like_get(api, media, path):
    (media["out"] / "x.webm").write_bytes(b"secret")
    get_status, head_status = await raw_request(api, "GET", path), await raw_request(api, "HEAD", path)
    assert head_status == get_status and head_status in (400, 404), (path, get_status, head_status)


async def test_head_symlink_out_of_root_is_refused(api, media, tmp_path):
    (tmp_path / "outside.txt").write_text("secret")
    (media["in"] / "link.mp4").symlink_to(tmp_path / "outside.txt")
    get, head = await api.http.get("/media/in/link.mp4"), await api.http.head("/media/in/link.mp4")
    assert head.status_code == get.status_code and head.status_code in (400, 404)


async def test_no_body_bytes_on_a_kept_alive_connection(api, media):
    """After HEAD the very next bytes on the connection are the next response's status line."""
    (media["out"] / "x.webm").write_bytes(b"webm-bytes" * 1000)
    host, port = api.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"HEAD /media/out/x.webm HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\n\r\n")
    writer.write(b"GET /media/out/x.webm HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nConnection: close\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    first, rest = raw.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 206") and b"content-length: 100" in first.lower()
    assert rest.startswith(b"HTTP/1.1 206"), rest[:40]
    assert rest.endswith(b"\r\n\r\nwebm-bytes")


async def test_the_app_itself_sends_an_empty_body_for_head(media):
    """Not left to the server: Litestar's ASGI response for HEAD carries no body (the file is never read)."""
    from mpr.api.app import create_app
    from mpr.settings import get_settings

    (media["out"] / "big.bin").write_bytes(b"z" * 300_000)
    app = create_app(get_settings())
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "HEAD",
        "scheme": "http",
        "path": "/media/out/big.bin",
        "raw_path": b"/media/out/big.bin",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"x")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)
    start, *bodies = sent
    assert start["status"] == 200 and (b"content-length", b"300000") in start["headers"]
    assert [b["body"] for b in bodies] == [b""]


async def test_head_redirects_like_get_for_remote_storage(start_api, s3_bucket, moto_server):  # noqa: F811
    api = await start_api(MEDIA_OUT=f"s3://{s3_bucket}/out/")
    moto_server.client("s3").put_object(Bucket=s3_bucket, Key="out/clip.mp4", Body=b"remote-bytes")
    get = await api.http.get("/media/out/clip.mp4")
    head = await api.http.head("/media/out/clip.mp4")
    assert get.status_code == head.status_code == 302 and head.content == b""
    for name in ("content-type", "content-length"):
        assert head.headers[name] == get.headers[name], name
    get_url, head_url = urllib.parse.urlsplit(get.headers["location"]), urllib.parse.urlsplit(head.headers["location"])
    assert head_url.path == get_url.path == f"/{s3_bucket}/out/clip.mp4"
    assert "Signature" in head_url.query or "X-Amz-Signature" in head_url.query
    for path in ("/media/out/..%2fsecret", "/media/out/%00x"):
        assert await raw_request(api, "HEAD", path) == await raw_request(api, "GET", path) == 400, path


async def test_head_thumbnail(api, media, clips):
    put_clip(media, clips["video"], "thumb.mp4")
    asset = await make_asset("thumb.mp4", duration=3.0)
    url = f"/api/assets/{asset.id}/thumbnail"
    head = await api.http.head(url, params={"t": 1.2, "w": 160})  # makes and caches the frame
    assert head.status_code == 200 and head.content == b""
    get = await api.http.get(url, params={"t": 1.2, "w": 160})
    assert get.content[:2] == b"\xff\xd8"
    assert head.headers["content-length"] == str(len(get.content)) == get.headers["content-length"]
    for name in ("content-type", "etag", "last-modified", "cache-control"):
        assert head.headers[name] == get.headers[name], name
    audio = await make_asset("a.mp3", kind="audio")
    for bad in ("/api/assets/nope/thumbnail", f"/api/assets/{audio.id}/thumbnail"):
        get, head = await api.http.get(bad), await api.http.head(bad)
        _same_headers(get, head)
        assert head.status_code == 404
