"""The watch folder of the real app: MPR_SCAN_INTERVAL scans register dropped files without any call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

DEADLINE = 90.0  # seconds; generous for a loaded 2-core machine (the passes run every 0.2 s)


async def _until(api: Any, check: Callable[[dict[str, dict]], bool]) -> dict[str, dict]:
    """The assets by path once ``check`` accepts them (polling GraphQL, like the Timeline UI does)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        data = await api.ok("{ assets { id path status size duration width error } }")
        assets = {a["path"]: a for a in data["assets"]}
        if check(assets):
            return assets
        if time.monotonic() > deadline:
            pytest.fail(f"the watch folder did not get there; assets now: {assets}")
        await asyncio.sleep(0.1)


async def test_a_dropped_file_is_registered_without_any_call(start_api, media, clips):
    api = await start_api(MPR_SCAN_INTERVAL="0.2")
    (media["in"] / "drop").mkdir()
    (media["in"] / "drop" / "clip.mp4").write_bytes(clips["video"].read_bytes())
    (media["in"] / "notes.txt").write_text("not media")
    assets = await _until(api, lambda a: "drop/clip.mp4" in a)
    clip = assets["drop/clip.mp4"]
    assert (clip["status"], clip["width"], int(clip["size"])) == ("ready", 320, clips["video"].stat().st_size)
    assert clip["duration"] == pytest.approx(3.0, abs=0.05)
    assert set(assets) == {"drop/clip.mp4"}

    # a file that goes away is marked missing, as by `mpr scan`
    (media["in"] / "drop" / "clip.mp4").unlink()
    await _until(api, lambda a: a["drop/clip.mp4"]["status"] == "missing")


async def test_a_half_written_file_ends_ready_once_complete(start_api, media, clips):
    api = await start_api(MPR_SCAN_INTERVAL="0.2")
    data = clips["video"].read_bytes()
    partial = media["in"] / "copying.mp4"
    partial.write_bytes(data[:4096])  # the copy stalls here
    (media["in"] / "marker.mp3").write_bytes(clips["audio"].read_bytes())
    # once the marker is in, the stalled file has looked the same on two passes: probed, unreadable
    assets = await _until(api, lambda a: "marker.mp3" in a and "copying.mp4" in a)
    assert assets["copying.mp4"]["status"] == "error", assets

    with partial.open("ab") as fh:  # the copy goes on and completes
        fh.write(data[4096:])
    assets = await _until(api, lambda a: a["copying.mp4"]["status"] == "ready")
    done = assets["copying.mp4"]
    assert (int(done["size"]), done["width"], done["error"]) == (len(data), 320, None)
    assert done["duration"] == pytest.approx(3.0, abs=0.05)


async def test_no_scan_without_the_interval(start_api, media, clips):
    api = await start_api(MPR_SCAN_INTERVAL="0")
    (media["in"] / "clip.mp4").write_bytes(clips["video"].read_bytes())
    # the app answered requests for a while; the file is still unknown until someone scans
    for _ in range(5):
        assert (await api.ok("{ assets { id } }"))["assets"] == []
        await asyncio.sleep(0.2)
    result = await api.ok("mutation { scanMediaFolder { registered } }")
    assert result["scanMediaFolder"]["registered"] == 1
