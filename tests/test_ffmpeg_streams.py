"""Which streams build_command keeps: every track on stream copy; on a transcode the first video, all audio
tracks and the subtitles the output container holds; never data or attachment streams (real ffmpeg)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import av
import pytest

from mpr import ffmpeg
from mpr.builtin_presets import STATIC_PRESETS
from mpr.presets import Preset
from mpr.probe import stream_list
from mpr.service import copy_preset
from testkit import ffmpeg_bin
from tests.subtitlecheck import (
    TRIM_IDS,
    TRIMS,
    assert_same_cues,
    cues,
    expected_cues,
    keyframe_before,
    make_subtitled,
    subtitle_tags,
    timing,
)

PRESETS = {p.name: p for p in STATIC_PRESETS}
FAST_MP4 = dataclasses.replace(PRESETS["h264-720p"], speed_preset="ultrafast", audio_bitrate="64k", channels=1)
FAST_WEBM = dataclasses.replace(PRESETS["vp9-webm"], speed_preset="8", crf=40)
FAST_MKV = Preset(
    name="mkv-test", container="mkv", video_codec="libx264", speed_preset="ultrafast", audio_codec="libopus"
)
SRT = "1\n00:00:00,000 --> 00:00:01,500\nHello\n\n2\n00:00:01,500 --> 00:00:03,000\nWorld\n"


def _run(args: list[str]) -> None:
    subprocess.run([ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """mkv: video + 2 audio (440/880 Hz) + srt + attachment; mp4: video + 2 audio + mov_text + tmcd data
    track; mp3 with cover art."""
    base = tmp_path_factory.mktemp("tracks")
    (base / "s.srt").write_text(SRT)
    (base / "font.txt").write_text("not really a font")
    lavfi = [
        *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=3"),
        *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=3"),
        *("-f", "lavfi", "-i", "sine=frequency=880:sample_rate=48000:duration=3"),
        *("-i", str(base / "s.srt")),
        *("-map", "0", "-map", "1", "-map", "2", "-map", "3"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2"),
    ]
    out = {"mkv": base / "multi.mkv", "mp4": base / "multi.mp4", "mp3": base / "cover.mp3"}
    attach = ["-attach", str(base / "font.txt"), "-metadata:s:t", "mimetype=text/plain"]
    _run([*lavfi, "-c:s", "srt", *attach, str(out["mkv"])])
    _run([*lavfi, "-c:s", "mov_text", "-timecode", "00:00:00:00", str(out["mp4"])])
    _run(["-f", "lavfi", "-i", "testsrc2=size=64x64:duration=0.04", "-frames:v", "1", str(base / "cover.png")])
    _run(
        [
            *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=2", "-i", str(base / "cover.png")),
            *("-map", "0", "-map", "1", "-c:a", "libmp3lame", "-c:v", "copy", "-disposition:v", "attached_pic"),
            str(out["mp3"]),
        ]
    )
    return out


def streams(path: Path) -> list[tuple[str, str]]:
    """(type, codec) of every stream of ``path``, in order."""
    return [(s["type"], s["codec"]) for s in stream_list(path) or []]


def transcode(src: Path, dst: Path, preset: Preset, **kwargs) -> list[tuple[str, str]]:
    ffmpeg.run(ffmpeg.build_command(src, dst, preset, **kwargs))
    return streams(dst)


def test_maps_are_argv_items_not_shell_strings(sources, tmp_path) -> None:
    argv = ffmpeg.build_command(sources["mkv"], tmp_path / "o.mp4", FAST_MP4)
    i = argv.index("file:" + str(tmp_path / "o.mp4"))
    maps = argv[argv.index("-map") : i]
    assert maps == ["-map", "0:V:0?", "-map", "0:a?", "-map", "0:3", "-c:s:0", "mov_text"]
    assert "-sn" not in argv and "-dn" in argv


@pytest.mark.parametrize("kind", ["mkv", "mp4"])
def test_copy_preset_keeps_every_track_and_drops_data_and_attachments(sources, tmp_path, kind) -> None:
    src = sources[kind]
    got = transcode(src, tmp_path / f"o.{kind}", copy_preset(), start=0.5, end=2.5)
    sub = "subrip" if kind == "mkv" else "mov_text"
    assert [t for t in got if t[0] != "data"] == [
        ("video", "h264"),
        ("audio", "aac"),
        ("audio", "aac"),
        ("subtitle", sub),
    ]
    assert not any(t[0] in ("attachment",) for t in got)
    if kind == "mkv":
        assert not any(t[0] == "data" for t in got)


def test_transcode_to_mp4_encodes_every_audio_track_and_converts_text_subtitles(sources, tmp_path) -> None:
    out = tmp_path / "o.mp4"
    got = transcode(sources["mkv"], out, FAST_MP4, start=0.5)
    assert got == [("video", "h264"), ("audio", "aac"), ("audio", "aac"), ("subtitle", "mov_text")]
    with av.open(str(out)) as container:
        # each track got the preset's audio settings (channels=1), and they stay different tracks
        assert [a.codec_context.channels for a in container.streams.audio] == [1, 1]
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_transcode_from_mp4_with_a_data_track_drops_it_quietly(sources, tmp_path) -> None:
    got = transcode(sources["mp4"], tmp_path / "o.mkv", FAST_MKV)
    # mov_text cannot go into Matroska: converted to srt
    assert got == [("video", "h264"), ("audio", "opus"), ("audio", "opus"), ("subtitle", "subrip")]


def test_transcode_to_webm_converts_subtitles_to_webvtt(sources, tmp_path) -> None:
    got = transcode(sources["mp4"], tmp_path / "o.webm", FAST_WEBM, end=1.0)
    assert got == [("video", "vp9"), ("audio", "opus"), ("audio", "opus"), ("subtitle", "webvtt")]


def test_audio_only_containers_get_no_subtitles_and_single_track_muxers_the_first_track(sources, tmp_path) -> None:
    assert transcode(sources["mkv"], tmp_path / "o.mp3", PRESETS["mp3-audio"]) == [("audio", "mp3")]
    assert transcode(sources["mkv"], tmp_path / "o.flac", PRESETS["flac-audio"]) == [("audio", "flac")]
    # m4a holds several audio tracks (no subtitles, no video)
    assert transcode(sources["mp4"], tmp_path / "o.m4a", PRESETS["aac-audio"]) == [("audio", "aac")] * 2


def test_cover_art_is_copied_by_stream_copy_and_never_encoded_as_video(sources, tmp_path) -> None:
    copied = transcode(sources["mp3"], tmp_path / "o.mp3", copy_preset(), start=0.5)
    assert sorted(copied) == [("audio", "mp3"), ("video", "png")]
    assert transcode(sources["mp3"], tmp_path / "o.m4a", PRESETS["aac-audio"]) == [("audio", "aac")]


def test_an_unreadable_source_still_gets_a_command_without_subtitles(tmp_path) -> None:
    argv = ffmpeg.build_command(tmp_path / "missing.mkv", tmp_path / "o.mp4", FAST_MP4)
    assert "-sn" in argv and "-c:s:0" not in argv and argv.count("-map") == 2


TRIM_PRESETS = {"mkv": FAST_MKV, "mp4": FAST_MP4, "webm": FAST_WEBM}


@pytest.fixture(scope="module")
def subtitled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_subtitled(tmp_path_factory.mktemp("trimsubs"))


def cut_subtitle_folders(argv: list[str]) -> set[Path]:
    """The temp folders of cut subtitles a command reads (``file:<tmp>/mpr-subs-…/N.ass`` inputs)."""
    return {Path(a.removeprefix("file:")).parent for a in argv if "mpr-subs-" in a}


def with_and_without_subtitles(src: Path, base: Path, ext: str, preset: Preset, start, end) -> tuple[Path, Path]:
    kept, dropped = base / f"kept.{ext}", base / f"dropped.{ext}"
    argv = ffmpeg.build_command(src, kept, preset, start=start, end=end)
    folders = cut_subtitle_folders(argv)
    assert folders and all(f.is_dir() for f in folders)
    ffmpeg.run(argv)
    assert not any(f.exists() for f in folders)  # run() removed the cut subtitles
    ffmpeg.run(ffmpeg.build_command(src, dropped, preset, start=start, end=end, subtitles=False))
    return kept, dropped


@pytest.mark.parametrize("container", ["mkv", "mp4", "webm"])
@pytest.mark.parametrize(("start", "end"), TRIMS, ids=TRIM_IDS)
def test_trimmed_transcode_keeps_clipped_cues_without_moving_video_or_audio(
    subtitled, tmp_path, container, start, end
) -> None:
    kept, dropped = with_and_without_subtitles(subtitled, tmp_path, container, TRIM_PRESETS[container], start, end)
    # every video and audio packet where the command without subtitles puts it (the 5.1 muxer shifted them all)
    assert timing(kept) == timing(dropped)
    assert timing(kept)["video"] and timing(kept)["audio"]
    want = expected_cues(subtitled, start, end)
    assert want and ("One" in [t for t, _, _ in want]) == (start is None)  # the cue before a trim start is gone
    assert_same_cues(cues(kept), want)
    if (start, end) == (1.3, 3.2):
        # language, title and the forced flag as an untrimmed output has them
        untrimmed = ffmpeg_untrimmed(subtitled, tmp_path / f"full.{container}", TRIM_PRESETS[container])
        assert subtitle_tags(kept) == subtitle_tags(untrimmed)
        (language, title, forced), *_ = subtitle_tags(kept)
        assert language in ("fra", "fre") and forced and title == (None if container == "mp4" else "French")


def ffmpeg_untrimmed(src: Path, out: Path, preset: Preset) -> Path:
    ffmpeg.run(ffmpeg.build_command(src, out, preset))
    return out


@pytest.mark.parametrize("container", ["mkv", "mp4"])
@pytest.mark.parametrize(("start", "end"), [(1.3, None), (None, 2.0), (1.3, 3.2)], ids=TRIM_IDS[1:3] + TRIM_IDS[4:])
def test_trimmed_stream_copy_keeps_clipped_cues_in_sync_with_the_copied_video(
    subtitled, tmp_path, container, start, end
) -> None:
    src = subtitled
    if container == "mp4":
        src = tmp_path / "subs.mp4"
        _run(["-i", str(subtitled), "-map", "0", "-c", "copy", "-c:s", "mov_text", str(src)])
    kept, dropped = with_and_without_subtitles(src, tmp_path, container, copy_preset(), start, end)
    assert timing(kept) == timing(dropped)
    # the copied video starts at the keyframe before the trim start: the cues move with it
    with av.open(str(dropped)) as c:
        first = min(float(p.pts * p.time_base) for p in c.demux(c.streams.video[0]) if p.pts is not None)
    shift = first + (start or 0.0) - keyframe_before(src, start or 0.0) if start else 0.0
    got = cues(kept)
    assert_same_cues(got, expected_cues(src, start, end, shift))
    assert [k for k in streams(kept) if k[0] == "subtitle"] == [
        ("subtitle", "subrip" if container == "mkv" else "mov_text")
    ]


def test_untrimmed_output_keeps_the_source_cues_as_they_are(subtitled, tmp_path) -> None:
    out = ffmpeg_untrimmed(subtitled, tmp_path / "o.mkv", FAST_MKV)
    argv = ffmpeg.build_command(subtitled, tmp_path / "o.mkv", FAST_MKV)
    assert argv.count("-i") == 1 and "0:2" in argv  # the source's own track, no cut-out file
    assert_same_cues(cues(out), cues(subtitled))


def test_clip_ass_drops_cues_outside_the_trim_and_clips_those_across_it() -> None:
    text = (
        "[Script Info]\nScriptType: v4.00+\n\n[Events]\n"
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
        "Dialogue: 0,0:00:00.20,0:00:00.90,Default,,0,0,0,,One, with a comma\n"
        "Dialogue: 0,0:00:01.20,0:00:02.30,Default,,0,0,0,,Two\n"
        "Dialogue: 0,0:00:02.50,0:00:03.60,Default,,0,0,0,,Three\n"
        "Dialogue: 0,0:01:03.60,0:01:04.00,Default,,0,0,0,,Late\n"
    )
    out = ffmpeg.clip_ass(text, 1.3, 3.2)
    dialogue = [line for line in out.splitlines() if line.startswith("Dialogue:")]
    assert dialogue == [
        "Dialogue: 0,0:00:00.00,0:00:01.00,Default,,0,0,0,,Two",
        "Dialogue: 0,0:00:01.20,0:00:01.90,Default,,0,0,0,,Three",
    ]
    assert "[Script Info]" in out
    assert [line for line in ffmpeg.clip_ass(text, 0.0, None).splitlines() if "Late" in line] == [
        "Dialogue: 0,0:01:03.60,0:01:04.00,Default,,0,0,0,,Late"
    ]


BROKEN_ASS = (
    "[Script Info]\nScriptType: v4.00+\n\n[V4+ Styles]\nFormat: Name, Fontname, Fontsize\nStyle: Default,Arial,20\n\n"
    "[Events]\nFormat: Layer, Start, End, Style, Text\n"
    "Dialogue: 0,0:00:00.20,0:00:01.00,Default,hello\n"
    "Dialogue: 0,garbage,0:00:01.50,Default,broken timing\n"
    "Dialogue: 0,0:00:01.20,0:00:01.80,Default,after\n"
)


def test_a_trimmed_job_whose_subtitle_has_a_broken_cue_still_succeeds(tmp_path) -> None:
    # ffmpeg carries a cue with unreadable times through to the cut-out .ass file: clip_ass must drop
    # that cue, not fail the job
    (tmp_path / "bad.ass").write_text(BROKEN_ASS)
    src = tmp_path / "bad-subs.mkv"
    _run(
        [
            *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=2"),
            *("-f", "lavfi", "-i", "sine=duration=2", "-i", str(tmp_path / "bad.ass")),
            *("-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"),
            *("-c:s", "ass", str(src)),
        ]
    )
    out = transcode(src, tmp_path / "o.mp4", FAST_MP4, start=0.5, end=1.9)
    assert [t for t, _ in out] == ["video", "audio", "subtitle"]
    assert [line for line in ffmpeg.clip_ass(BROKEN_ASS, 0.0, None).splitlines() if "broken" in line] == []


def test_run_removes_the_subtitle_folder_even_when_ffmpeg_cannot_start(subtitled, tmp_path) -> None:
    argv = ffmpeg.build_command(subtitled, tmp_path / "o.mkv", FAST_MKV, start=1.0, end=2.0)
    folders = [Path(a[len("file:") :]).parent for a in argv if a.startswith("file:") and a.endswith(".ass")]
    assert folders and all(f.is_dir() for f in folders)
    with pytest.raises(ffmpeg.FFmpegError, match="cannot start ffmpeg"):
        ffmpeg.run([str(tmp_path / "no-such-ffmpeg"), *argv[1:]])
    assert not any(f.exists() for f in folders)
