"""createJob and createPreset rules: an audio-only preset needs an audio track, Unicode output names
(and the names refused), user presets stored with pix_fmt yuv420p."""

from __future__ import annotations

import pytest

from mpr import service
from mpr.errors import ValidationError
from mpr.models import TranscodeJob, TranscodePreset
from testkit import make_clip
from tests.core_helpers import fake_executor, ready_asset, synced  # noqa: F401 (fixture `fake`)


async def test_audio_only_preset_on_a_video_without_audio_is_refused(db, media, tmp_path, fake) -> None:
    await synced()
    silent = await ready_asset(media, make_clip(tmp_path / "silent.mp4", seconds=1.0, audio=False), "silent.mp4")
    assert silent.audio_codec is None and silent.kind.value == "video"
    for name in ("aac-audio", "mp3-audio", "flac-audio"):
        with pytest.raises(ValidationError, match="audio-only but silent.mp4 has no audio track"):
            await service.create_job(silent.id, name)
    assert await TranscodeJob.all().count() == 0 and fake.submitted == []
    # video presets and stream copy still take it
    job = await service.create_job(silent.id, "h264-720p")
    copy = await service.create_job(silent.id, None)
    assert (job.output_path, copy.output_path) == ("silent_h264-720p.mp4", "silent_copy.mp4")


@pytest.mark.parametrize(
    ("name", "output"),
    [
        ("Résumé final", "Résumé final.mp4"),
        ("日本語の動画.mp4", "日本語の動画.mp4"),
        ("हिन्दी", "हिन्दी.mp4"),
        ("видео 2024 (v2)", "видео 2024 (v2).mp4"),
        ("Cafe\u0301", "Caf\u00e9.mp4"),  # a decomposed accent is stored composed (NFC)
        ("é" * 100, "é" * 100 + ".mp4"),  # 200 bytes
    ],
)
async def test_unicode_output_names_are_accepted(db, media, clips, fake, name, output) -> None:
    await synced()
    asset = await ready_asset(media, clips["video"], "in/clip.mp4")
    job = await service.create_job(asset.id, "h264-720p", output_name=name)
    assert job.output_path == output


@pytest.mark.parametrize(
    "name",
    [
        "a/b",
        "..",
        "a..b",
        ".hidden",
        "-x",
        "a\\b",
        "tab\there",
        "nul\x00",
        "bell\x07",
        "del\x7f",
        "zero\u200bwidth",
        "é" * 101,  # 202 bytes
        "a" * 201,
        "C:x",
        "名前/サブ",
    ],
)
async def test_unsafe_output_names_are_refused(db, media, clips, fake, name) -> None:
    await synced()
    asset = await ready_asset(media, clips["video"], "clip.mp4")
    with pytest.raises(ValidationError, match="output name may use letters and digits"):
        await service.create_job(asset.id, "h264-720p", output_name=name)
    assert await TranscodeJob.all().count() == 0


async def test_user_preset_is_stored_with_yuv420p_unless_it_chooses(db, media) -> None:
    mine = await service.create_preset({"name": "mine", "container": "mp4", "video_codec": "libx264", "crf": 20})
    assert (await TranscodePreset.get(id=mine.id)).extra == {"pix_fmt": "yuv420p"}
    ten = await service.create_preset(
        {"name": "ten", "container": "mkv", "video_codec": "libx265", "extra": {"pix_fmt": "yuv420p10le"}}
    )
    assert (await TranscodePreset.get(id=ten.id)).extra == {"pix_fmt": "yuv420p10le"}
    vp9 = await service.update_preset(ten.id, {"container": "webm", "video_codec": "libvpx-vp9", "extra": {}})
    assert vp9.extra == {"pix_fmt": "yuv420p"}
