"""Small helpers shared by the UI tests (imported as tests.ui.helpers)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from testkit import make_clip

ROOT = Path(__file__).resolve().parents[2]
# The README's screenshots are refreshed only on request (MPR_UPDATE_SCREENSHOTS=1 make test), so a
# test run never dirties the checkout; otherwise they land in a temp dir for looking at after a failure.
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("MPR_UPDATE_SCREENSHOTS")
    else Path(tempfile.gettempdir()) / "mpr-screenshots"
)
CLIP_CACHE: dict[tuple, Path] = {}
# Put in a clip's name (place_clip's stem), it makes the UI server encode that clip at native speed
# (ffmpeg -re): an N s clip's job runs N s on any machine, for tests that act while it runs.
REALTIME = "realtime"


def place_clip(media_in: Path, cache_dir: Path, stem: str, suffix: str = ".mp4", **clip_args) -> Path:
    """Copy a generated clip (made once per argument set) into MEDIA_IN under a unique name."""
    key = (suffix, tuple(sorted(clip_args.items())))
    if key not in CLIP_CACHE:
        CLIP_CACHE[key] = make_clip(cache_dir / f"clip-{len(CLIP_CACHE)}{suffix}", **clip_args)
    dst = media_in / f"{stem}-{uuid.uuid4().hex[:8]}{suffix}"
    shutil.copyfile(CLIP_CACHE[key], dst)
    return dst


def response_json(response) -> dict:
    return json.loads(response.body())


def create_job_id(response) -> str:
    """The id of the job a createJob/retryJob GraphQL response returned."""
    data = response_json(response)
    assert not data.get("errors"), data
    return next(iter(data["data"].values()))["id"]


def is_graphql_mutation(name: str):
    def match(response) -> bool:
        if not response.url.endswith("/graphql") or response.request.method != "POST":
            return False
        return name in (response.request.post_data or "")

    return match


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")
