"""Every audio track survives encoders with channel-layout limits (real ffmpeg): libopus refuses layouts
outside the Vorbis order (4.0, 5.1(side) ...), libvorbis mislabels them, libmp3lame takes 2 channels at most;
a track those encoders cannot take as it is gets converted, alone, keeping its channel count where it can."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mpr import ffmpeg
from mpr.presets import Preset
from mpr.probe import stream_list
from testkit import ffmpeg_bin

# (lavfi channel layout, codec stored in the source): pcm in Matroska keeps no layout ("4 channels",
# which ffmpeg guesses to be 4.0 / 2.1), ac3 decodes as 5.1(side) - the usual DVD/broadcast track
TRACKS = [("stereo", "pcm_s16le"), ("4.0", "pcm_s16le"), ("5.1(side)", "ac3"), ("mono", "pcm_s16le")]
TRACKS += [("2.1", "pcm_s16le"), ("5.1", "pcm_s16le"), ("7.1", "pcm_s16le")]
CHANNELS = [2, 4, 6, 1, 3, 6, 8]


def _source(path: Path, tracks: list[tuple[str, str]], video: bool = True) -> Path:
    args = [ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        args += ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=0.5"]
    for layout, _ in tracks:
        args += ["-f", "lavfi", "-i", f"sine=sample_rate=48000:duration=0.5,aformat=channel_layouts={layout}"]
    for i in range(len(tracks) + video):
        args += ["-map", str(i)]
    if video:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    for n, (_, codec) in enumerate(tracks):
        args += [f"-c:a:{n}", codec]
    subprocess.run([*args, str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _source(tmp_path_factory.mktemp("layouts") / "tracks.mkv", TRACKS)


def audio_channels(path: Path) -> list[int]:
    return [s["channels"] for s in stream_list(path) or [] if s["type"] == "audio"]


def layout_args(argv: list[str]) -> list[str]:
    return [a for a in argv if a.startswith(("-ch_layout", "-filter:a", "-ac"))]


def test_the_source_has_the_layouts_that_broke_libopus(source) -> None:
    layouts = [s["channel_layout"] for s in stream_list(source) or [] if s["type"] == "audio"]
    assert layouts[2] == "5.1(side)" and layouts[1] == "4 channels"  # unknown: ffmpeg decodes it as 4.0
    assert audio_channels(source) == CHANNELS


@pytest.mark.parametrize(
    ("container", "video_codec", "audio_codec"),
    [("webm", "libvpx-vp9", "libopus"), ("mkv", "libx264", "libopus"), ("webm", "libvpx", "libvorbis")],
)
def test_every_track_encodes_with_its_channel_count(source, tmp_path, container, video_codec, audio_codec) -> None:
    preset = Preset(
        name="p", container=container, video_codec=video_codec, speed_preset="ultrafast", audio_codec=audio_codec
    )
    out = tmp_path / f"o.{container}"
    argv = ffmpeg.build_command(source, out, preset)
    # only the tracks the encoder cannot take get an argument: 4.0 -> quad, 5.1(side) -> 5.1, 2.1 -> 3.0
    expected = {"-ch_layout:a:1": "quad", "-ch_layout:a:4": "3.0"}
    if audio_codec == "libopus":
        expected["-ch_layout:a:2"] = "5.1"
    assert {a: argv[argv.index(a) + 1] for a in layout_args(argv)} == expected
    ffmpeg.run(argv)
    assert audio_channels(out) == CHANNELS
    layouts = [s["channel_layout"] for s in stream_list(out) or [] if s["type"] == "audio"]
    assert "4.0" not in layouts and "2.1" not in layouts


def test_mp3_into_mkv_downmixes_what_lame_cannot_take(source, tmp_path) -> None:
    preset = Preset(
        name="p", container="mkv", video_codec="libx264", speed_preset="ultrafast", audio_codec="libmp3lame"
    )
    out = tmp_path / "o.mkv"
    argv = ffmpeg.build_command(source, out, preset)
    assert layout_args(argv) == []  # libmp3lame declares mono/stereo: ffmpeg downmixes by itself
    ffmpeg.run(argv)
    assert [s["codec"] for s in stream_list(out) or [] if s["type"] == "audio"] == ["mp3"] * len(TRACKS)
    assert audio_channels(out) == [2, 2, 2, 1, 2, 2, 2]


def test_stereo_and_5_1_sources_keep_todays_argv(tmp_path) -> None:
    src = _source(tmp_path / "plain.mkv", [("stereo", "aac"), ("5.1", "pcm_s16le"), ("5.1", "aac")])
    preset = Preset(name="p", container="webm", video_codec="libvpx-vp9", audio_codec="libopus")
    out = tmp_path / "o.webm"
    argv = ffmpeg.build_command(src, out, preset)
    assert argv[argv.index("-map") : argv.index(f"file:{out}")] == ["-map", "0:V:0?", "-map", "0:a?"]
    assert layout_args(argv) == []


@pytest.mark.parametrize(("channels", "layout"), [(3, "3.0"), (4, "quad"), (6, None), (2, None)])
def test_preset_channel_count_uses_a_layout_libopus_takes(source, tmp_path, channels, layout) -> None:
    preset = Preset(name="p", container="webm", audio_codec="libopus", channels=channels)
    out = tmp_path / "o.webm"
    argv = ffmpeg.build_command(source, out, preset)
    if layout:  # -ac 3 / -ac 4 would mean 2.1 / 4.0
        assert layout_args(argv) == ["-ch_layout"] and argv[argv.index("-ch_layout") + 1] == layout
    else:  # the preset's count as before, nothing per track
        assert layout_args(argv) == ["-ac"] and argv[argv.index("-ac") + 1] == str(channels)
    ffmpeg.run(argv)
    assert audio_channels(out) == [channels] * len(TRACKS)


def test_opus_keeps_the_first_8_of_more_channels(tmp_path) -> None:
    src = tmp_path / "ten.mkv"
    merge = "sine=sample_rate=48000:duration=0.5,asplit=10" + "".join(f"[a{i}]" for i in range(10))
    merge += ";" + "".join(f"[a{i}]" for i in range(10)) + "amerge=inputs=10"
    args = ["-f", "lavfi", "-i", "sine=sample_rate=48000:duration=0.5", "-filter_complex", merge.split(",", 1)[1]]
    subprocess.run(
        [ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y", *args, "-c:a", "pcm_s16le", str(src)], check=True
    )
    assert audio_channels(src) == [10]
    out = tmp_path / "o.opus"
    ffmpeg.run(ffmpeg.build_command(src, out, Preset(name="p", container="opus", audio_codec="libopus")))
    assert audio_channels(out) == [8]
