"""Hostile inputs to the surface added with uploads, signed reads, deleteJob and ``serve --processes``."""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import time

import pytest

from mpr.models import JobStatus, MediaAsset, TranscodeJob

from .conftest import put

pytestmark = pytest.mark.timeout(180)

TOKEN = "api-token-Qm3-secret-value"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _files(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


async def test_upload_names_too_long_invisible_or_undecodable_get_400_and_leave_nothing(serve, media, clips):
    api = await serve(MPR_API_TOKEN=TOKEN)
    data = clips["video"].read_bytes()
    for name in [
        "a" * 300 + ".mp4",  # one name over the filesystem's 255 bytes
        "é" * 150 + ".mp4",  # 300 bytes of UTF-8 in 154 characters
        "d/" * 600 + "x.mp4",  # a key over any path limit
        "a\nb.mp4",  # log lines and listings
        "a\tb.mp4",
        "clip\u202e4pm.mov",  # a bidi override shows "clipvom.mp4"
        "zero\u200bwidth.mp4",
        "zero\u200cwidth.mp4",
        "\ufeffbom.mp4",
        "\U0001f468\u202e\U0001f469.mp4",  # between emoji, a bidi override is still one
        "\U0001f468\u200b\U0001f469.mp4",
        "a\u200db.mp4",  # a zero-width joiner joins emoji only
        "\u200d\U0001f468.mp4",
        "\U0001f468\u200d.mp4",
        "\U0001f468\u200d\u200d\U0001f469.mp4",
        "a\ufe0f.mp4",  # a variation selector follows a symbol only
        "\u2764\ufe0f\ufe0e.mp4",
        "1\ufe0f.mp4",  # ... or a keycap's digit: 1️⃣
    ]:
        r = await api.http.post("/api/upload", params={"filename": name}, content=data, headers=AUTH)
        assert r.status_code == 400, (name[:20], r.status_code, r.text[:200])
        assert "internal error" not in r.text and "Traceback" not in r.text
    assert _files(media["in"]) == []
    assert await MediaAsset.all().count() == 0
    # bytes that are not UTF-8, or a lone surrogate, percent-encoded in the query
    host, port = api.url.removeprefix("http://").split(":")
    for raw in ("%ff%fe.mp4", "%ed%a0%80.mp4"):
        reader, writer = await asyncio.open_connection(host, int(port))
        head = f"POST /api/upload?filename={raw} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        writer.write(f"{head}Content-Length: 4\r\nConnection: close\r\n\r\nabcd".encode())
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        writer.close()
        assert status in (201, 400), (raw, status)  # a replacement character is a name
    for path in media["in"].rglob("*"):
        path.name.encode("utf-8")  # no surrogate escapes reached the filesystem


async def test_upload_names_with_emoji_sequences_are_kept_as_they_are(serve, media, clips):
    api = await serve(MPR_API_TOKEN=TOKEN)
    data = clips["audio"].read_bytes()
    names = [
        "\U0001f468\u200d\U0001f469\u200d\U0001f467 family.mp3",  # zero-width joiners: 👨‍👩‍👧
        "\u2764\ufe0f.mp3",  # emoji-style selector: ❤️
        "\u2194\ufe0e.mp3",  # text-style selector: ↔︎
        "\U0001f3f3\ufe0f\u200d\U0001f308.mp3",  # selector, then joiner: 🏳️‍🌈
        "\U0001f469\U0001f3fd\u200d\U0001f4bb.mp3",  # skin tone, then joiner: 👩🏽‍💻
        "1\ufe0f\u20e3 intro.mp3",  # keycap: 1️⃣
        "\U0001f1eb\U0001f1f7.mp3",  # regional indicators: 🇫🇷
    ]
    for name in names:
        r = await api.http.post("/api/upload", params={"filename": name}, content=data, headers=AUTH)
        assert r.status_code == 201, (ascii(name), r.text)
        assert r.json()["path"] == name
    assert _files(media["in"]) == sorted(names)
    assert sorted(a.path for a in await MediaAsset.all()) == sorted(names)


async def test_upload_names_are_nfc_so_one_visible_name_is_one_file(serve, media, clips):
    api = await serve(MPR_API_TOKEN=TOKEN)
    data = clips["audio"].read_bytes()
    paths = []
    for name in ("cafe\u0301.mp3", "caf\u00e9.mp3"):  # the same name, decomposed and composed
        r = await api.http.post("/api/upload", params={"filename": name}, content=data, headers=AUTH)
        assert r.status_code == 201, r.text
        paths.append(r.json()["path"])
    assert paths == ["caf\u00e9.mp3", "caf\u00e9 (1).mp3"]


async def test_upload_temp_files_of_a_crash_are_removed_at_start_up_but_not_live_ones(serve, media):
    from mpr.settings import get_settings
    from mpr.upload import UPLOAD_TMP_PREFIX, remove_stale_uploads

    old = time.time() - 3600
    stale = [media["in"] / f"{UPLOAD_TMP_PREFIX}abc", media["in"] / "deep" / "er" / f"{UPLOAD_TMP_PREFIX}def"]
    stale.append(media["var"] / "uploads" / f"{UPLOAD_TMP_PREFIX}ghi")
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
        os.utime(path, (old, old))
    # kept: an upload another process is still receiving (it holds the flock), a fresh one, other temp files
    live = media["in"] / f"{UPLOAD_TMP_PREFIX}live"
    live.write_bytes(b"partial")
    os.utime(live, (old, old))
    fresh = media["in"] / f"{UPLOAD_TMP_PREFIX}fresh"
    fresh.write_bytes(b"just created")
    job_output = media["out"] / ".mpr-tmp-0123.mp4"
    job_output.write_bytes(b"a job writing")
    os.utime(job_output, (old, old))
    with open(live, "rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        await serve()  # start-up removes what a crash left
        for _ in range(200):
            if not any(p.exists() for p in stale):
                break
            await asyncio.sleep(0.05)
        assert not any(p.exists() for p in stale), [p for p in stale if p.exists()]
        assert live.exists() and fresh.exists() and job_output.exists()
        assert remove_stale_uploads(get_settings()) == []
    assert remove_stale_uploads(get_settings()) == [live]  # its uploader is gone now


async def test_an_aborted_upload_leaves_no_temp_file(serve, media, clips):
    api = await serve(MPR_API_TOKEN=TOKEN)
    host, port = api.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"POST /api/upload?filename=cut.mp4 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    writer.write(f"{head}Content-Length: 10000000\r\nConnection: close\r\n\r\n".encode() + b"\0" * 3_000_000)
    await writer.drain()
    for _ in range(200):  # the server has the temp file open
        if any(p.name.startswith(".mpr-tmp-") for p in media["in"].iterdir()):
            break
        await asyncio.sleep(0.05)
    writer.transport.abort()
    for _ in range(200):
        if not list(media["in"].iterdir()):
            break
        await asyncio.sleep(0.05)
    assert list(media["in"].iterdir()) == []


async def test_delete_output_of_an_unfinished_job_never_removes_a_source_when_roots_overlap(serve, media, clips):
    """MEDIA_OUT = MEDIA_IN: a failed job's reserved output name must not become a way to delete a source."""
    api = await serve(MPR_API_TOKEN=TOKEN, MEDIA_OUT=str(media["in"]))
    failed = await TranscodeJob.create(
        source_path="a.mp4", output_path="victim.mp4", executor="local", preset_snapshot={}, status=JobStatus.FAILED
    )
    # an upload does not take a name a job reserved for its output
    r = await api.http.post("/api/upload", params={"filename": "victim.mp4"}, content=clips["video"].read_bytes(),
                            headers=AUTH)  # fmt: skip
    assert r.status_code == 201 and r.json()["path"] == "victim (1).mp4", r.text
    # a source put there by hand (or scanned) is not the failed job's output: deleteOutput refuses
    put(media, clips["video"], "victim.mp4")
    mutation = 'mutation { deleteJob(id: "%s", deleteOutput: true) { ok } }' % failed.id  # noqa: UP031
    body = await api.gql(mutation, token=TOKEN)
    assert body.get("errors") and "not deleted" in body["errors"][0]["message"], body
    assert (media["in"] / "victim.mp4").exists() and (media["in"] / "victim (1).mp4").exists()
    assert await TranscodeJob.exists(id=failed.id)
    # without deleteOutput the job goes and the file stays
    assert await api.ok('mutation { deleteJob(id: "%s") { ok } }' % failed.id, token=TOKEN)  # noqa: UP031
    assert (media["in"] / "victim.mp4").exists()
    # a completed job's output is its own: removed
    done = await TranscodeJob.create(
        source_path="a.mp4", output_path="out.mp4", executor="local", preset_snapshot={}, status=JobStatus.COMPLETED
    )
    (media["in"] / "out.mp4").write_bytes(b"output")
    await api.ok('mutation { deleteJob(id: "%s", deleteOutput: true) { ok } }' % done.id, token=TOKEN)  # noqa: UP031
    assert not (media["in"] / "out.mp4").exists()


async def test_thumbnail_sizes_and_times_are_few_per_asset_whatever_a_signed_url_asks(serve, media, clips):
    from mpr.api.media import THUMB_TIMES, THUMB_WIDTHS

    api = await serve(MPR_API_TOKEN=TOKEN)
    put(media, clips["video"], "t.mp4")
    await api.ok("mutation { scanMediaFolder { registered } }", token=TOKEN)
    signed = (await api.ok("{ assets { id thumbnailUrl } }", token=TOKEN))["assets"][0]
    for w in range(16, 400, 7):  # 55 widths through one signed URL
        r = await api.http.get(signed["thumbnailUrl"] + f"&t=1.5&w={w}")
        assert r.status_code == 200, (w, r.status_code)
    thumbs = list((media["var"] / "thumbs" / signed["id"]).iterdir())
    assert len(thumbs) <= len([x for x in THUMB_WIDTHS if x < 400]) + 1, sorted(p.name for p in thumbs)
    from mpr.api.media import thumb_time

    # an hour-long asset has at most THUMB_TIMES + 1 distinct times, not 36 000
    assert len({thumb_time(t / 10, 3600.0) for t in range(0, 36_000)}) <= THUMB_TIMES + 1
    assert thumb_time(1.2, 3.0) == 1.2  # short clips keep their 0.1 s


def test_token_compare_survives_a_lone_surrogate():
    from mpr.api.auth import token_ok
    from mpr.settings import Settings

    settings = Settings(api_token=TOKEN)
    assert token_ok(settings, "\ud800") is False
    assert token_ok(settings, TOKEN) is True
    assert token_ok(settings, {"not": "a string"}) is False  # type: ignore[arg-type]


def test_a_child_of_serve_processes_does_not_pass_the_listening_socket_on():
    from mpr.api.processes import bind, inherited_socket

    parent = bind("127.0.0.1", 0)  # inheritable, as supervise() hands it to each child
    try:
        child = inherited_socket(os.dup(parent.fileno()))
        try:
            assert child.get_inheritable() is False
            assert child.type == socket.SOCK_STREAM
        finally:
            child.close()
    finally:
        parent.close()
