"""Probing with PyAV: real clips, and the bad files a media library meets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpr.errors import ProbeError
from mpr.probe import keyframe_times, probe
from testkit import make_clip


def test_probe_video_clip(clips) -> None:
    r = probe(clips["video"])
    assert r.kind == "video"
    assert r.container == "mp4"
    assert (r.video_codec, r.audio_codec) == ("h264", "aac")
    assert (r.width, r.height, r.fps) == (320, 240, 25.0)
    assert r.duration == pytest.approx(3.0, abs=0.05)
    assert r.bitrate and r.bitrate > 0
    assert r.sample_rate == 48000 and r.channels == 1
    json.dumps(r.raw)  # stored in a JSON column
    assert {s["type"] for s in r.raw["streams"]} == {"video", "audio"}


def test_probe_audio_clip_uses_canonical_codec_names(clips) -> None:
    r = probe(clips["audio"])
    assert r.kind == "audio"
    assert (r.video_codec, r.audio_codec, r.container) == (None, "mp3", "mp3")
    assert r.duration == pytest.approx(2.0, abs=0.1)
    assert r.width is None and r.fps is None


@pytest.mark.parametrize(
    ("name", "message"),
    [("truncated", "not a readable media file"), ("garbage", "not a readable media file"), ("empty", "empty")],
)
def test_bad_files_raise_a_readable_probe_error(clips, name: str, message: str) -> None:
    with pytest.raises(ProbeError, match=message) as info:
        probe(clips[name])
    assert clips[name].name in str(info.value)
    assert "Traceback" not in str(info.value)


def test_file_cut_short_with_intact_index_is_detected(tmp_path: Path) -> None:
    # moov atom first (faststart): the header is fine, the media data ends early
    full = make_clip(tmp_path / "fs.mp4", seconds=3.0, extra=["-movflags", "+faststart"])
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 4])
    with pytest.raises(ProbeError, match="truncated"):
        probe(cut)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="cannot read"):
        probe(tmp_path / "nope.mp4")


def test_text_file_with_media_extension(tmp_path: Path) -> None:
    f = tmp_path / "notes.mkv"
    f.write_text("hello, not a video\n" * 100)
    with pytest.raises(ProbeError):
        probe(f)


def test_keyframe_times_follow_the_gop(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "gop.mp4", seconds=3.0, gop=25, audio=False)
    assert keyframe_times(clip) == pytest.approx([0.0, 1.0, 2.0], abs=0.001)


def test_keyframe_times_of_audio_only_file_is_an_error(clips) -> None:
    with pytest.raises(ProbeError, match="no video"):
        keyframe_times(clips["audio"])
