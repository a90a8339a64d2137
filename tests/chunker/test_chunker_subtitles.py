"""A chunked job keeps the subtitles a single pass keeps: the final mux reads them from the source with the
single pass's trim and codec choices (same streams, cue texts and cue times; real ffmpeg)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from mpr import ffmpeg
from mpr.chunker.concat import concat_command
from mpr.presets import Preset
from mpr.probe import stream_list
from testkit import ffmpeg_bin
from tests.chunker.chunkcheck import chunked, single_pass
from tests.subtitlecheck import FRAME, SRT, TRIM_IDS, TRIMS, assert_same_cues, cues, expected_cues, timing

MKV = Preset(name="mkv-sub", container="mkv", video_codec="libx264", speed_preset="ultrafast", audio_codec="libopus")
MP4 = Preset(
    name="mp4-sub",
    container="mp4",
    video_codec="libx264",
    speed_preset="ultrafast",
    audio_codec="aac",
    extra={"pix_fmt": "yuv420p", "faststart": True},
)
WEBM = Preset(
    name="webm-sub", container="webm", video_codec="libvpx-vp9", speed_preset="8", crf=40, audio_codec="libopus"
)
OGG = Preset(name="ogg-sub", container="ogg", video_codec="libtheora", audio_codec="libvorbis")
PRESETS = {"mkv": MKV, "mp4": MP4}


@pytest.fixture(scope="module")
def subtitled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of 160x120 H.264 + AAC with an srt track (three cues) in Matroska."""
    base = tmp_path_factory.mktemp("subs")
    (base / "s.srt").write_text(SRT)
    path = base / "subs.mkv"
    args = [
        ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=4",
        "-i", str(base / "s.srt"),
        "-map", "0", "-map", "1", "-map", "2",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s", "srt",
        str(path),
    ]  # fmt: skip
    subprocess.run(args, check=True)
    return path


def kinds(path: Path) -> list[tuple[str, str]]:
    return [(s["type"], s["codec"]) for s in stream_list(path) or []]


@pytest.mark.parametrize("container", ["mkv", "mp4"])
@pytest.mark.parametrize(
    ("start", "end"),
    [(None, None), (1.0, 3.0), (1.3, 3.2)],
    ids=["untrimmed", "trim-on-keyframe", "trim-off-keyframe"],
)
async def test_chunked_output_has_the_single_pass_subtitles(
    container, start, end, subtitled, sqlite_db, new_job, tmp_path
) -> None:
    preset = PRESETS[container]
    job_id = await new_job(trim_start=start, trim_end=end)
    out = await chunked(job_id, subtitled, tmp_path / f"chunked.{container}", preset, start=start, end=end)
    ref = await asyncio.to_thread(single_pass, subtitled, tmp_path / f"single.{container}", preset, start, end)
    sub = "mov_text" if container == "mp4" else "subrip"
    assert kinds(out) == kinds(ref)
    assert kinds(out)[-1] == ("subtitle", sub)
    got, want = cues(out), cues(ref)
    assert want, "the single pass kept no cue: the fixture is wrong"
    assert_same_cues(got, want)
    assert "Three" in [t for t, _, _ in got]


async def test_chunked_webm_converts_subtitles_to_webvtt(subtitled, sqlite_db, new_job, tmp_path) -> None:
    job_id = await new_job()
    out = await chunked(job_id, subtitled, tmp_path / "chunked.webm", WEBM)
    ref = await asyncio.to_thread(single_pass, subtitled, tmp_path / "single.webm", WEBM)
    assert kinds(out) == [("video", "vp9"), ("audio", "opus"), ("subtitle", "webvtt")] == kinds(ref)
    assert [t for t, _, _ in cues(out)] == ["One", "Two", "Three"]
    assert_same_cues(cues(out), cues(ref))


async def test_chunked_output_in_a_container_without_subtitles_drops_them(
    subtitled, sqlite_db, new_job, tmp_path
) -> None:
    job_id = await new_job(trim_start=1.3)
    out = await chunked(job_id, subtitled, tmp_path / "chunked.ogg", OGG, start=1.3)
    assert kinds(out) == [("video", "theora"), ("audio", "vorbis")]


def test_concat_command_reads_subtitles_from_the_trimmed_source_as_argv_items(subtitled, tmp_path) -> None:
    argv = concat_command(
        tmp_path / "list.txt",
        tmp_path / "a.mp4",
        tmp_path / "o.mp4",
        MP4,
        source=subtitled,
        trim_start=1.3,
        trim_end=3.2,
    )
    # trimmed: not the source itself (its packets after a seek start before the trim) but the cues cut out of it
    assert "file:" + str(subtitled) not in argv
    i = argv.index("2:0")  # the cut-out file is input 2 (after the chunks and the audio)
    assert argv[i - 1 : i + 3] == ["-map", "2:0", "-c:s:0", "mov_text"]
    assert argv[argv.index("-i", argv.index("-i") + 3) + 1].endswith(".ass")
    assert argv[argv.index("-c") :][:2] == ["-c", "copy"]
    # no source: no subtitle input; a container without subtitles: none either
    assert "-c:s:0" not in concat_command(tmp_path / "l.txt", None, tmp_path / "o.mp4", MP4)
    assert argv.count("-i") == 3
    ffmpeg.run([ffmpeg_bin(), "-version", *argv[argv.index("2:0") - 3 : argv.index("2:0") - 1]])  # removes it
    assert concat_command(tmp_path / "l.txt", None, tmp_path / "o.ogg", OGG, source=subtitled).count("-i") == 1


def test_single_pass_maps_match_the_concat_maps(subtitled, tmp_path) -> None:
    # the single pass and the final mux take their subtitle choices from the same function
    single = ffmpeg.build_command(subtitled, tmp_path / "o.webm", WEBM)
    assert single[single.index("-c:s:0") + 1] == "webvtt"
    argv = concat_command(tmp_path / "l.txt", None, tmp_path / "o.webm", WEBM, source=subtitled)
    assert argv[argv.index("-c:s:0") + 1] == "webvtt" and "1:2" in argv


@pytest.mark.parametrize("container", ["mkv", "mp4", "webm"])
@pytest.mark.parametrize(("start", "end"), TRIMS, ids=TRIM_IDS)
async def test_trimmed_chunked_output_keeps_clipped_cues_without_moving_video_or_audio(
    container, start, end, subtitled, sqlite_db, new_job, tmp_path
) -> None:
    preset = {**PRESETS, "webm": WEBM}[container]
    job_id = await new_job(trim_start=start, trim_end=end)
    out = await chunked(job_id, subtitled, tmp_path / f"chunked.{container}", preset, start=start, end=end)
    dropped = tmp_path / f"dropped.{container}"
    argv = ffmpeg.build_command(subtitled, dropped, preset, start=start, end=end, subtitles=False)
    await asyncio.to_thread(ffmpeg.run, argv)
    got, ref = timing(out), timing(dropped)
    # the same frames and audio at the same times as the trimmed single pass without subtitles
    assert len(got["video"]) == len(ref["video"]) and len(got["audio"]) == len(ref["audio"])
    # (within a frame: the concat's copied audio and chunks may sit some ms off the single pass's, subtitles or
    # not; the 5.1 muxer moved everything by the dropped lead-in, 0.8 s here)
    for kind in ("video", "audio"):
        assert min(p for p, _ in got[kind]) == pytest.approx(min(p for p, _ in ref[kind]), abs=FRAME), kind
    assert_same_cues(cues(out), expected_cues(subtitled, start, end))
