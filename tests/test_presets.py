"""Preset validation (every field, whitelist of extras) and syncing plugin presets into the database."""

from __future__ import annotations

import pytest

from mpr import hookimpl
from mpr.builtin_presets import builtin_presets
from mpr.errors import ValidationError
from mpr.ffmpeg import available_encoders
from mpr.plugins import register_plugin, unregister_plugin
from mpr.presets import EXTRA_OPTIONS, Preset, sync_presets, validate_preset

GOOD = {"name": "my-h264", "container": "mp4", "video_codec": "libx264", "crf": 20, "audio_codec": "aac"}


def test_builtin_presets_are_valid_and_complete() -> None:
    presets = {p.name: p for p in builtin_presets()}
    assert {"h264-720p", "h264-1080p", "h265-1080p", "vp9-webm", "aac-audio", "mp3-audio", "flac-audio", "copy"} <= set(
        presets
    )
    assert ("av1" in presets) == bool({"libsvtav1", "libaom-av1"} & available_encoders())
    for preset in presets.values():
        assert validate_preset(preset, encoders=available_encoders()) == preset


def test_valid_preset_is_normalised() -> None:
    p = validate_preset({**GOOD, "container": "MP4", "width": "1280", "extra": {"tune": "film"}})
    assert (p.container, p.width, p.extra) == ("mp4", 1280, {"tune": "film", "pix_fmt": "yuv420p"})


@pytest.mark.parametrize(
    ("container", "codec", "audio"),
    [
        ("mp4", "libx264", "aac"),
        ("mp4", "libx265", "aac"),
        ("webm", "libvpx-vp9", "libopus"),
        ("mkv", "libaom-av1", "libopus"),
        ("mkv", "libsvtav1", "libopus"),
    ],
)
def test_browser_codecs_default_to_yuv420p_unless_set(container: str, codec: str, audio: str) -> None:
    data = {"name": "p", "container": container, "video_codec": codec, "audio_codec": audio}
    assert validate_preset(data).extra == {"pix_fmt": "yuv420p"}
    assert validate_preset({**data, "extra": {"pix_fmt": "yuv444p10le"}}).extra == {"pix_fmt": "yuv444p10le"}


def test_no_pix_fmt_default_without_such_a_video_encode() -> None:
    for data in (
        {"name": "m", "container": "mkv", "video_codec": "mpeg4", "audio_codec": "aac"},
        {"name": "c", "container": "mkv", "video_codec": "copy", "audio_codec": "aac"},
        {"name": "a", "container": "m4a", "audio_codec": "aac"},
    ):
        assert "pix_fmt" not in validate_preset(data).extra


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": ""}, "name"),
        ({"name": "../evil"}, "name"),
        ({"container": "exe"}, "container"),
        ({"video_codec": "libfoo"}, "unknown codec 'libfoo'"),
        ({"audio_codec": "-f lavfi"}, "unknown codec"),
        ({"container": "webm"}, "cannot go into a webm"),
        ({"container": "mp3"}, "audio-only"),
        ({"crf": 99}, "crf"),
        ({"crf": "high"}, "crf"),
        ({"video_bitrate": "2M"}, "either crf"),
        ({"crf": None, "video_bitrate": "fast"}, "bitrate"),
        ({"speed_preset": "warp"}, "speed_preset"),
        ({"width": 641}, "even"),
        ({"height": 100000}, "height"),
        ({"fps": 0}, "fps"),
        ({"fps": "abc"}, "fps"),
        ({"sample_rate": 12345}, "sample_rate"),
        ({"channels": 0}, "channels"),
        ({"audio_bitrate": "1e9"}, "audio_bitrate"),
        ({"extra": {"vf": "drawtext"}}, "not allowed"),
        ({"extra": {"pix_fmt": "rgb48"}}, "pix_fmt"),
        ({"extra": {"gop": -1}}, "gop"),
        ({"extra": "-y"}, "extra"),
        ({"video_codec": None, "audio_codec": None}, "needs a video or an audio"),
        ({"video_codec": "copy"}, "crf"),
        ({"container": "source"}, "stream copy"),
        ({"bogus": 1}, "unknown preset field"),
    ],
)
def test_invalid_fields_give_clear_errors(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_preset({**GOOD, **change})


def test_codec_missing_from_the_ffmpeg_build_is_refused() -> None:
    with pytest.raises(ValidationError, match="not available in this ffmpeg build"):
        validate_preset(GOOD, encoders=frozenset({"aac"}))


def test_extra_whitelist_has_no_raw_arguments() -> None:
    assert "args" not in EXTRA_OPTIONS and "vf" not in EXTRA_OPTIONS and "filter_complex" not in EXTRA_OPTIONS
    for key, value in {
        "pix_fmt": "yuv420p",
        "profile": "high",
        "level": "4.1",
        "tune": "film",
        "gop": 50,
        "keyint_min": 25,
        "bframes": 2,
        "maxrate": "4M",
        "bufsize": "8M",
        "closed_gop": True,
        "scene_cut": False,
    }.items():
        assert validate_preset({**GOOD, "extra": {key: value}}).extra == {"pix_fmt": "yuv420p", key: value}


class ThirdParty:
    """A tiny third-party preset plugin."""

    version = 1

    @hookimpl
    def register_presets(self, register):
        register(
            Preset(
                name="tp-small",
                container="mp4",
                video_codec="libx264",
                crf=30 + self.version,
                width=320,
                audio_codec="aac",
                audio_bitrate="64k",
            )
        )
        register(Preset(name="h264-720p-clone", container="mp4", video_codec="libx264", crf=23))


def reload(plugin: ThirdParty, version: int) -> None:
    """Simulate installing a new version of the plugin."""
    unregister_plugin(plugin)
    plugin.version = version
    register_plugin(plugin, name="mpr-third-party")


@pytest.fixture
def third_party(media):
    plugin = ThirdParty()
    register_plugin(plugin, name="mpr-third-party")
    try:
        yield plugin
    finally:
        unregister_plugin(plugin)


async def test_sync_creates_updates_and_never_overwrites_user_edits(db, third_party) -> None:
    from mpr import service
    from mpr.models import TranscodePreset

    first = await sync_presets()
    assert "tp-small" in first.created and "h264-720p" in first.created
    row = await TranscodePreset.get(name="tp-small")
    assert (row.source, row.crf, row.modified) == ("mpr-third-party", 31, False)
    assert (await TranscodePreset.get(name="h264-720p")).source == "builtin"

    again = await sync_presets()
    assert again.created == [] and again.updated == []

    # the plugin ships a new version: synced
    reload(third_party, version=2)
    upgraded = await sync_presets()
    assert upgraded.updated == ["tp-small"]
    assert (await TranscodePreset.get(name="tp-small")).crf == 32

    # the user edits it: the next plugin version does not overwrite the edit
    await service.update_preset(row.id, {"crf": 18})
    reload(third_party, version=3)
    kept = await sync_presets()
    assert "tp-small" in kept.kept
    edited = await TranscodePreset.get(name="tp-small")
    assert (edited.crf, edited.modified) == (18, True)


async def test_sync_never_touches_a_user_preset_with_the_same_name(db, third_party) -> None:
    from mpr import service
    from mpr.models import TranscodePreset

    await service.create_preset({"name": "tp-small", "container": "mkv", "video_codec": "libx264", "crf": 10})
    result = await sync_presets()
    assert "tp-small" in result.kept
    row = await TranscodePreset.get(name="tp-small")
    assert (row.source, row.container, row.crf) == ("user", "mkv", 10)
