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


def _ten_channels(path: Path) -> Path:
    """A single 10-channel pcm track in Matroska (no layout: "10 channels", which no ffmpeg rematrix takes)."""
    labels = "".join(f"[a{i}]" for i in range(10))
    merge = f"asplit=10{labels};{labels}amerge=inputs=10"
    args = ["-f", "lavfi", "-i", "sine=sample_rate=48000:duration=0.5", "-filter_complex", merge]
    subprocess.run(
        [ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y", *args, "-c:a", "pcm_s16le", str(path)], check=True
    )
    return path


@pytest.fixture(scope="module")
def odd_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("odd")
    # pcm in Matroska stores no layout: 7.0 / 7.1 become "7 channels" / "8 channels"
    return {
        "ten": _ten_channels(folder / "ten.mkv"),
        "seven": _source(folder / "seven.mkv", [("7.0", "pcm_s16le")], video=False),
        "eight": _source(folder / "eight.mkv", [("7.1", "pcm_s16le")], video=False),
    }


# audio codec -> (container, channels kept of a 10-channel, an unnamed 7-channel, an unnamed 8-channel track).
# 9+ channels keep their first 8 as 7.1, which ffmpeg then converts to what the encoder takes; ac3 takes
# 5.1 at most, libmp3lame stereo, alac's 8-channel layout is 7.1(wide) so ffmpeg mixes 7.1 into 6.1(back).
KEPT = {
    "aac": ("m4a", 8, 7, 8),
    "libmp3lame": ("mp3", 2, 2, 2),
    "libopus": ("opus", 8, 7, 8),
    "libvorbis": ("ogg", 8, 7, 8),
    "flac": ("flac", 8, 7, 8),
    "alac": ("m4a", 7, 7, 7),
    "pcm_s16le": ("wav", 10, 7, 8),
    "ac3": ("mkv", 6, 6, 6),
}


def test_every_allowed_audio_codec_is_in_the_table() -> None:
    from mpr.presets import AUDIO_CODECS

    assert set(KEPT) == set(AUDIO_CODECS)


def test_odd_sources_have_no_layout(odd_sources) -> None:
    for name, count in (("ten", 10), ("seven", 7), ("eight", 8)):
        (track,) = [s for s in stream_list(odd_sources[name]) or [] if s["type"] == "audio"]
        assert (track["channels"], track["channel_layout"]) == (count, f"{count} channels")


@pytest.mark.parametrize("audio_codec", list(KEPT))
@pytest.mark.parametrize("track", ["ten", "seven", "eight"])
def test_every_codec_encodes_odd_channel_counts(odd_sources, tmp_path, audio_codec, track) -> None:
    container, *kept = KEPT[audio_codec]
    preset = Preset(name="p", container=container, audio_codec=audio_codec)
    out = tmp_path / f"o.{container}"
    argv = ffmpeg.build_command(odd_sources[track], out, preset)
    pan = ["-filter:a:0", "pan=7.1|" + "|".join(f"c{i}=c{i}" for i in range(8))]
    if track == "ten" and audio_codec != "pcm_s16le":
        assert argv[argv.index("-filter:a:0") :][:2] == pan
    else:
        assert "-filter:a:0" not in argv
    ffmpeg.run(argv)
    assert audio_channels(out) == [kept[["ten", "seven", "eight"].index(track)]]
    # the output decodes whole
    subprocess.run([ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-i", str(out), "-f", "null", "-"], check=True)


@pytest.mark.parametrize(("audio_codec", "channels"), [("aac", 2), ("libopus", 4), ("ac3", 6)])
def test_preset_channel_count_over_ten_channels(odd_sources, tmp_path, audio_codec, channels) -> None:
    # -ac alone fails on 10 unnamed channels ("Rematrix is needed ... not enough information"): first 8, then -ac
    container = "mkv"
    preset = Preset(name="p", container=container, audio_codec=audio_codec, channels=channels)
    out = tmp_path / f"o.{container}"
    argv = ffmpeg.build_command(odd_sources["ten"], out, preset)
    assert "-filter:a:0" in argv
    ffmpeg.run(argv)
    assert audio_channels(out) == [channels]


def test_multi_track_source_only_the_wide_track_gets_an_argument(odd_sources, tmp_path) -> None:
    src = tmp_path / "two.mkv"
    subprocess.run(
        [ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(odd_sources["seven"]), "-i",
         str(odd_sources["ten"]), "-map", "0:a", "-map", "1:a", "-c:a", "pcm_s16le", str(src)],
        check=True,
    )  # fmt: skip
    preset = Preset(name="p", container="mkv", audio_codec="aac")
    out = tmp_path / "o.mkv"
    argv = ffmpeg.build_command(src, out, preset)
    assert layout_args(argv) == ["-filter:a:1"]
    ffmpeg.run(argv)
    assert audio_channels(out) == [7, 8]
