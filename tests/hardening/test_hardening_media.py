"""Hostile media through the real app and its embedded worker: each ends as a clear error, the worker survives."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from mpr.models import JobStatus
from testkit import ffmpeg_bin

from .conftest import put, wait_job

pytestmark = pytest.mark.timeout(180)

WEIRD_NAMES = [
    "-i.mp4",  # must never be read as an ffmpeg option
    "sp ace 'single' \"double\" ünï€ode.mp4",
    "--help.mp4",
    "semi;colon $(x) `y` & z.mp4",
    "new\nline\ttab.mp4",
]
ASSETS = "{ assets { id path status error width height } }"
CREATE = "mutation($a: ID!, $p: ID) { createJob(input: {sourceAssetId: $a, presetId: $p}) { id status outputPath } }"


def huge_resolution_clip(tmp: Path) -> Path:
    """An MJPEG mp4 whose frames and sample entry declare 60000x60000 (4 Gpixel) while holding 320x240 data."""
    small = tmp / "small_mjpeg.mp4"
    subprocess.run(
        [
            ffmpeg_bin(),
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=5:duration=1",
            "-c:v",
            "mjpeg",
            "-y",
            str(small),
        ],
        check=True,
    )
    data = bytearray(small.read_bytes())
    i = 0
    while (i := data.find(b"\xff\xc0", i)) >= 0:  # JPEG SOF0: marker, length, precision, height, width
        if data[i + 4] == 8:
            data[i + 5 : i + 9] = struct.pack(">HH", 60000, 60000)
        i += 2
    entry = data.find(b"jpeg")  # the visual sample entry: width and height 28 bytes after its type
    assert entry > 0
    data[entry + 28 : entry + 32] = struct.pack(">HH", 60000, 60000)
    out = tmp / "huge.mp4"
    out.write_bytes(bytes(data))
    return out


async def _preset_ids(api) -> dict[str, str]:
    return {p["name"]: p["id"] for p in (await api.ok("{ presets { id name } }"))["presets"]}


async def test_hostile_files_become_clear_asset_errors_and_good_odd_names_work(serve, media, clips, tmp_path):
    api = await serve(worker=True)
    bad = {
        "truncated.mp4": clips["truncated"],  # moov missing
        "garbage.mp4": clips["garbage"],
        "empty.mp4": clips["empty"],
        "huge.mp4": huge_resolution_clip(tmp_path),
    }
    for name, src in bad.items():
        put(media, src, name)
    for name in WEIRD_NAMES:
        put(media, clips["video"], name)
    outside = tmp_path / "secret" / "outside.mp4"
    outside.parent.mkdir()
    shutil.copyfile(clips["video"], outside)
    os.symlink(outside, media["in"] / "link.mp4")
    os.symlink(outside.parent, media["in"] / "linkdir")

    scan = (await api.ok("mutation { scanMediaFolder { found registered skipped errors } }"))["scanMediaFolder"]
    assets = {a["path"]: a for a in (await api.ok(ASSETS))["assets"]}

    # symlinks that leave MEDIA_IN are not followed: no asset, and the file cannot be served
    assert "link.mp4" not in assets and not any(p.startswith("linkdir") for p in assets), sorted(assets)
    for url in ("/media/in/link.mp4", "/media/in/linkdir/outside.mp4"):
        r = await api.http.get(url)
        assert r.status_code in (400, 404) and b"\x00\x00\x00" not in r.content[:64], (url, r.status_code)

    for name in bad:
        asset = assets[name]
        assert asset["status"] == "error", asset
        assert asset["error"] and len(asset["error"]) < 500 and "Traceback" not in asset["error"], asset
        assert str(media["in"]) not in asset["error"], asset  # no server paths leak to users
    assert (
        "empty" in assets["empty.mp4"]["error"].lower()
        or "0 bytes" in assets["empty.mp4"]["error"].lower()
        or "not a readable" in assets["empty.mp4"]["error"].lower()
    ), assets["empty.mp4"]
    for name in WEIRD_NAMES:
        assert assets[name]["status"] == "ready", assets[name]
    assert scan["registered"] == len(bad) + len(WEIRD_NAMES), scan

    # an asset in error cannot be transcoded: a clear GraphQL error, no job row
    presets = await _preset_ids(api)
    body = await api.gql(CREATE, {"a": assets["garbage.mp4"]["id"], "p": presets["h264-720p"]})
    assert body.get("errors") and "not ready" in body["errors"][0]["message"], body
    assert (await api.ok("{ jobs { id } }"))["jobs"] == []

    # every odd name goes through ffmpeg as a file, not an option, and completes
    job_ids = []
    for name in WEIRD_NAMES:
        job = (await api.ok(CREATE, {"a": assets[name]["id"], "p": presets["copy"]}))["createJob"]
        job_ids.append(job["id"])
    for jid, name in zip(job_ids, WEIRD_NAMES):
        job = await wait_job(jid, JobStatus.COMPLETED, JobStatus.FAILED, timeout=90)
        assert job.status is JobStatus.COMPLETED, (name, job.error)
        assert (media["out"] / job.output_path).stat().st_size > 1000, name
    assert not (Path.cwd() / "-i.mp4").exists()

    # the chunker (concat list files, per-chunk encodes) copes with the same names
    chunked = (
        await api.ok(
            "mutation($a: ID!, $p: ID) { createJob(input: {sourceAssetId: $a, presetId: $p, chunked: true,"
            " chunkSeconds: 1, chunkWorkers: 2}) { id } }",
            {"a": assets[WEIRD_NAMES[1]]["id"], "p": presets["h264-720p"]},
        )
    )["createJob"]
    job = await wait_job(chunked["id"], JobStatus.COMPLETED, JobStatus.FAILED, timeout=120)
    assert job.status is JobStatus.COMPLETED, job.error
    assert (media["out"] / job.output_path).stat().st_size > 1000


async def test_a_source_corrupted_after_scan_fails_its_job_and_the_worker_runs_the_next(serve, media, clips, tmp_path):
    api = await serve(worker=True)
    put(media, clips["video"], "victim.mp4")
    put(media, clips["video"], "good.mp4")
    put(media, clips["video"], "huge-later.mp4")
    put(media, clips["video"], "swapped.mp4")
    await api.ok("mutation { scanMediaFolder { registered } }")
    assets = {a["path"]: a for a in (await api.ok(ASSETS))["assets"]}
    presets = await _preset_ids(api)
    # replaced by hostile bytes after a successful probe (the probe result is no protection)
    shutil.copyfile(clips["truncated"], media["in"] / "victim.mp4")
    shutil.copyfile(huge_resolution_clip(tmp_path), media["in"] / "huge-later.mp4")
    # and a file swapped for a symlink that leaves MEDIA_IN (time-of-check/time-of-use)
    outside = tmp_path / "private.mp4"
    shutil.copyfile(clips["video"], outside)
    (media["in"] / "swapped.mp4").unlink()
    (media["in"] / "swapped.mp4").symlink_to(outside)
    r = await api.http.get(f"/api/assets/{assets['swapped.mp4']['id']}/thumbnail?t=1")
    assert r.status_code in (400, 404, 422) and r.headers["content-type"] != "image/jpeg", r.status_code

    bad1 = (await api.ok(CREATE, {"a": assets["victim.mp4"]["id"], "p": presets["h264-720p"]}))["createJob"]
    bad2 = (await api.ok(CREATE, {"a": assets["huge-later.mp4"]["id"], "p": presets["h264-720p"]}))["createJob"]
    body = await api.gql(CREATE, {"a": assets["swapped.mp4"]["id"], "p": presets["copy"]})
    if not body.get("errors"):  # refused at creation, or failed when run: never read through the link
        swapped = await wait_job(body["data"]["createJob"]["id"], JobStatus.COMPLETED, JobStatus.FAILED, timeout=90)
        assert swapped.status is JobStatus.FAILED and "outside" in swapped.error, (swapped.status, swapped.error)
    good = (await api.ok(CREATE, {"a": assets["good.mp4"]["id"], "p": presets["copy"]}))["createJob"]
    for bad in (bad1, bad2):
        job = await wait_job(bad["id"], JobStatus.COMPLETED, JobStatus.FAILED, timeout=90)
        assert job.status is JobStatus.FAILED, job.status
        assert job.error and len(job.error) <= 4000 and "Traceback" not in job.error, job.error
        assert not (media["out"] / job.output_path).exists()  # no partial output left behind
    job = await wait_job(good["id"], JobStatus.COMPLETED, JobStatus.FAILED, timeout=90)
    assert job.status is JobStatus.COMPLETED, job.error
    leftovers = [p.name for p in media["out"].rglob("*") if p.is_file() and p.name != Path(job.output_path).name]
    assert leftovers == [], leftovers
