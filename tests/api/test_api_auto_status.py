"""MPR_AUTO_PRESET over GraphQL: ``Asset.autoStatus``/``autoReason`` and ``systemStatus.autoPreset``,
checked against the asset rows a real scan (real ffmpeg probes) left (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mpr.models import AutoStatus, MediaAsset, TranscodePreset
from testkit import make_clip

from .conftest import put_clip

FIELDS = "id path autoStatus autoReason"
SCAN = "mutation { scanMediaFolder { registered queued autoSkipped errors } }"


@pytest.fixture(scope="module")
def mkv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An h264 clip in Matroska: not in h264-720p's container, so MPR_AUTO_PRESET queues it."""
    return make_clip(tmp_path_factory.mktemp("autostatus") / "clip.mkv", seconds=1.0)


@pytest.fixture
def own_queue(monkeypatch: pytest.MonkeyPatch):
    """A local-executor queue of this test's own (the auto jobs are queued, never run)."""
    from mpr_local.queue import reset_queues

    monkeypatch.setenv("MPR_LOCAL_QUEUE", f"mprautostatus_{uuid.uuid4().hex[:10]}")
    yield
    reset_queues()


async def test_assets_report_the_auto_mark_and_the_skip_reason(start_api, media, clips, mkv, own_queue) -> None:
    api = await start_api()
    put_clip(media, clips["video"], "before.mp4")  # registered while automatic transcoding is off
    assert (await api.ok(SCAN))["scanMediaFolder"]["registered"] == 1

    api = await start_api(MPR_AUTO_PRESET="h264-720p")
    put_clip(media, mkv, "new.mkv")  # transcoded
    put_clip(media, clips["video"], "same.mp4")  # already mp4 + h264: skipped
    put_clip(media, clips["audio"], "music/tone.mp3")  # a video preset does not apply: skipped
    scanned = (await api.ok(SCAN))["scanMediaFolder"]
    assert scanned == {"registered": 3, "queued": 1, "autoSkipped": 2, "errors": []}

    listed = {a["path"]: a for a in (await api.ok("{ assets { " + FIELDS + " } }"))["assets"]}
    assert {p: (a["autoStatus"], a["autoReason"]) for p, a in listed.items()} == {
        "before.mp4": (None, None),
        "new.mkv": ("queued", None),
        "same.mp4": ("skipped", "already mp4 with h264 video (MPR_AUTO_SKIP_MATCHING=1)"),
        "music/tone.mp3": ("skipped", listed["music/tone.mp3"]["autoReason"]),
    }
    assert "has no video stream" in listed["music/tone.mp3"]["autoReason"]
    for path, shown in listed.items():
        row = await MediaAsset.get(path=path)
        assert shown["autoStatus"] == (row.auto.value if row.auto else None)
        assert shown["autoReason"] == row.auto_reason
        # the single-asset query (a model row, not the list's values()) agrees
        one = (await api.ok("query($id: ID!) { asset(id: $id) { " + FIELDS + " } }", {"id": shown["id"]}))["asset"]
        assert one == shown
    assert (await MediaAsset.get(path="new.mkv")).auto is AutoStatus.QUEUED

    # only autoStatus asked for: the list loads the "auto" column for it (no reason, no other field)
    only = (await api.ok("{ assets { autoStatus } }"))["assets"]
    assert sorted(a["autoStatus"] or "" for a in only) == ["", "queued", "skipped", "skipped"]


async def test_system_status_names_the_auto_preset(start_api, own_queue) -> None:
    status = "{ systemStatus { status autoPreset } }"
    api = await start_api()
    assert (await api.ok(status))["systemStatus"] == {"status": "ok", "autoPreset": None}

    preset = await TranscodePreset.get(name="mp3-audio")
    api = await start_api(MPR_AUTO_PRESET=str(preset.id))  # by id: reported by name
    assert (await api.ok(status))["systemStatus"]["autoPreset"] == "mp3-audio"
    api = await start_api(MPR_AUTO_PRESET="h264-720p")
    assert (await api.ok(status))["systemStatus"]["autoPreset"] == "h264-720p"
    # mpr serve refuses an unknown preset at start-up; the query still shows what the variable says
    api = await start_api(MPR_AUTO_PRESET="no-such-preset")
    assert (await api.ok(status))["systemStatus"]["autoPreset"] == "no-such-preset"
