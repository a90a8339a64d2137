"""POST /api/upload: stream a file into MEDIA_IN, register and probe it; refuse bad names, big bodies, no token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mpr_storage_s3.testing import moto_server, s3_bucket  # noqa: F401  (fixtures)

from mpr.models import AssetKind, AssetStatus, MediaAsset


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


async def _chunks(data: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_upload_stores_registers_and_probes_the_file(api, media, clips):
    data = clips["video"].read_bytes()
    r = await api.http.post("/api/upload", params={"filename": "My Clip.mp4"}, content=data)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["path"], body["status"], body["kind"], body["renamed"]) == ("My Clip.mp4", "ready", "video", False)
    asset = await MediaAsset.get(id=body["id"])
    assert (asset.status, asset.kind, asset.size) == (AssetStatus.READY, AssetKind.VIDEO, len(data))
    assert (asset.width, asset.height, asset.video_codec, asset.audio_codec) == (320, 240, "h264", "aac")
    assert asset.duration == pytest.approx(3.0, abs=0.05)
    assert (media["in"] / "My Clip.mp4").read_bytes() == data
    assert _files(media["in"]) == ["My Clip.mp4"]  # no temp file left behind

    # a streamed body (chunked, no Content-Length) into a subfolder; the GraphQL library sees it
    r = await api.http.post(
        "/api/upload", params={"filename": "music/tone.mp3"}, content=_chunks(clips["audio"].read_bytes())
    )
    assert r.status_code == 201, r.text
    assert (r.json()["kind"], r.json()["status"]) == ("audio", "ready")
    paths = {a["path"]: a["status"] for a in (await api.ok("{ assets { path status } }"))["assets"]}
    assert paths == {"My Clip.mp4": "ready", "music/tone.mp3": "ready"}


async def test_upload_never_overwrites_a_name_it_picks_the_next_free_one(api, media, clips):
    data = clips["video"].read_bytes()
    (media["in"] / "clip.mp4").write_bytes(b"the original stays")
    got = []
    for _ in range(2):
        r = await api.http.post("/api/upload", params={"filename": "clip.mp4"}, content=data)
        assert r.status_code == 201, r.text
        got.append((r.json()["path"], r.json()["renamed"], r.json()["status"]))
    assert got == [("clip (1).mp4", True, "ready"), ("clip (2).mp4", True, "ready")]
    assert (media["in"] / "clip.mp4").read_bytes() == b"the original stays"
    # a name an asset holds counts as taken even when its file is gone (the asset is missing)
    (media["in"] / "clip (1).mp4").unlink()
    r = await api.http.post("/api/upload", params={"filename": "clip (1).mp4"}, content=data)
    assert r.json()["path"] == "clip (1) (1).mp4"


async def test_upload_of_a_broken_file_is_an_asset_in_error(api, media, clips):
    r = await api.http.post("/api/upload", params={"filename": "bad.mkv"}, content=clips["garbage"].read_bytes())
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "error" and "not a readable media file" in r.json()["error"]


@pytest.mark.parametrize(
    "name",
    ["../escape.mp4", "/etc/escape.mp4", "a/../../escape.mp4", "%2e%2e/escape.mp4", "a\\..\\escape.mp4", ""],
)
async def test_upload_refuses_names_that_leave_media_in(api, media, clips, name):
    r = await api.http.post("/api/upload", params={"filename": name}, content=clips["audio"].read_bytes())
    assert r.status_code == 400, r.text
    assert r.json()["error"]
    assert _files(media["in"]) == [] and _files(media["in"].parent) == []
    assert await MediaAsset.all().count() == 0


@pytest.mark.parametrize("name", ["notes.txt", "clip.mp4.part", ".hidden.mp4", "noext", ".mpr-tmp-x.mp4"])
async def test_upload_refuses_names_without_a_media_extension(api, media, clips, name):
    r = await api.http.post("/api/upload", params={"filename": name}, content=clips["audio"].read_bytes())
    assert r.status_code == 400, r.text
    assert "not a supported media file" in r.json()["error"]
    assert _files(media["in"]) == []


async def test_upload_without_a_filename_is_400(api, media, clips):
    r = await api.http.post("/api/upload", content=clips["audio"].read_bytes())
    assert r.status_code == 400
    assert _files(media["in"]) == []


async def test_upload_refuses_a_multipart_form_body_and_stores_nothing(api, media, clips):
    # `curl -F file=@clip.mp4`: the form envelope around the file must not become an asset in error
    r = await api.http.post(
        "/api/upload", params={"filename": "clip.mp4"}, files={"file": ("clip.mp4", clips["video"].read_bytes())}
    )
    assert r.status_code == 400, r.text
    assert "--data-binary" in r.json()["error"] and "multipart" in r.json()["error"]
    assert _files(media["in"]) == [] and await MediaAsset.all().count() == 0


async def test_upload_over_the_limit_is_413_and_leaves_nothing(start_api, media, clips):
    api = await start_api(MPR_UPLOAD_MAX_BYTES="10000")
    data = clips["audio"].read_bytes()
    assert len(data) > 10000
    # announced (Content-Length): refused before reading; streamed (chunked): refused once past the limit
    for content in (data, _chunks(data, 4096)):
        r = await api.http.post("/api/upload", params={"filename": "big.mp3"}, content=content)
        assert r.status_code == 413, r.text
        assert "MPR_UPLOAD_MAX_BYTES" in r.json()["error"]
        assert _files(media["in"]) == []
    assert await MediaAsset.all().count() == 0
    r = await api.http.post("/api/upload", params={"filename": "small.mp3"}, content=data[:9000])
    assert r.status_code == 201  # under the limit it is taken (a truncated mp3 still probes)


async def test_upload_needs_the_api_token_when_one_is_set(start_api, media, clips):
    api = await start_api(MPR_API_TOKEN="s3cret")
    data = clips["audio"].read_bytes()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = await api.http.post("/api/upload", params={"filename": "a.mp3"}, content=data, headers=headers)
        assert r.status_code == 401, r.text
        assert "MPR_API_TOKEN" in r.json()["error"]
    assert _files(media["in"]) == []
    r = await api.http.post(
        "/api/upload", params={"filename": "a.mp3"}, content=data, headers={"Authorization": "Bearer s3cret"}
    )
    assert r.status_code == 201 and r.json()["status"] == "ready"


async def test_upload_to_s3_media_in(start_api, media, clips, s3_bucket, moto_server):  # noqa: F811
    api = await start_api(MEDIA_IN=f"s3://{s3_bucket}/in/")
    s3 = moto_server.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=b"already here")
    data = clips["video"].read_bytes()
    r = await api.http.post("/api/upload", params={"filename": "clip.mp4"}, content=_chunks(data))
    assert r.status_code == 201, r.text
    assert (r.json()["path"], r.json()["status"]) == ("clip (1).mp4", "ready")
    assert s3.get_object(Bucket=s3_bucket, Key="in/clip (1).mp4")["Body"].read() == data
    assert s3.get_object(Bucket=s3_bucket, Key="in/clip.mp4")["Body"].read() == b"already here"
    asset = await MediaAsset.get(id=r.json()["id"])
    assert (asset.width, asset.video_codec, asset.size) == (320, "h264", len(data))
    assert list((media["var"] / "uploads").iterdir()) == []  # the temp file is gone
    r = await api.http.post("/api/upload", params={"filename": "../x.mp4"}, content=data)
    assert r.status_code == 400
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", []))
    assert keys == ["in/clip (1).mp4", "in/clip.mp4"]
