"""Trimming audio with the stream-copy preset: the cut is exact to the packet in every audio container.

Input seeking lands on the demuxer's seek point before the start (an Ogg page,
a Matroska cluster), and a stream copy used to keep all of it: a 3 s cut of an
Ogg Vorbis file lasted 3.99 s, of a .mka/.webm 5 s. Each source here is a
chirp (its frequency rises with time), so where a cut really starts and ends in
the source is found by matching its decoded samples against the source's.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest

from mpr import ffmpeg
from mpr.errors import ValidationError
from mpr.presets import Preset
from mpr.probe import has_video, probe
from testkit import ffmpeg_bin, make_clip

RATE = 48000
SECONDS = 10.0
COPY = Preset(name="copy", container="source", video_codec="copy", audio_codec="copy")
CHIRP = f"aevalsrc=sin(2*PI*(200+50*t)*t):s={RATE}:d={SECONDS}"
# file name -> encoder arguments (AAC without noise substitution, which decodes to random noise)
SOURCES = {
    "vorbis.ogg": ["-c:a", "libvorbis"],
    "opus.ogg": ["-c:a", "libopus"],
    "tone.opus": ["-c:a", "libopus"],
    "tone.mp3": ["-c:a", "libmp3lame"],
    "tone.m4a": ["-c:a", "aac", "-aac_pns", "0"],
    "aac.mp4": ["-c:a", "aac", "-aac_pns", "0"],
    "tone.wav": ["-c:a", "pcm_s16le"],
    "tone.flac": ["-c:a", "flac"],
    "vorbis.mka": ["-c:a", "libvorbis"],
    "aac.mka": ["-c:a", "aac", "-aac_pns", "0"],
    "opus.webm": ["-c:a", "libopus"],
}
CUTS = [(2.0, 5.0), (2.37, 5.11), (None, 3.0), (7.0, None)]
# an mp3 cut to the end of the file has its own test (test_mp3_cut_to_the_end)
CASES = [(name, s, e) for name in SOURCES for s, e in CUTS if not (name == "tone.mp3" and e is None)]


def _ffmpeg(*args: str) -> bytes:
    argv = [ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y", *args]
    return subprocess.run(argv, check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("audio-trim")
    for name, codec in SOURCES.items():
        _ffmpeg("-f", "lavfi", "-i", CHIRP, *codec, str(folder / name))
    return folder


def pcm(path: Path) -> bytes:
    """Every decoded sample (mono s16le) of ``path``."""
    return _ffmpeg("-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(RATE), "-")


def packet_seconds(path: Path) -> float:
    """The longest audio packet of ``path``, in seconds."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        return max(float(p.duration * p.time_base) for p in c.demux(stream) if p.duration)


def cut_span(source: bytes, cut: bytes) -> tuple[float, float]:
    """(start, end) in seconds of the source that the decoded ``cut`` covers: a stream copy decodes
    to the very same samples once past its first packet, so a window of it is found in the source."""
    at = RATE // 2 * 2  # 0.5 s in, in bytes: past the first packet, whose priming is lost
    window = cut[at : at + 4000]
    index = source.find(window)
    while index % 2:  # sample-aligned matches only
        index = source.find(window, index + 1)
    assert index >= 0, "the cut does not decode to samples of the source"
    first = (index - at) // 2
    return first / RATE, (first + len(cut) // 2) / RATE


@pytest.mark.parametrize(("name", "start", "end"), CASES, ids=[f"{n}-{s}-{e}" for n, s, e in CASES])
def test_a_copy_trim_is_exact_to_the_packet(sources, tmp_path, name, start, end) -> None:
    src = sources / name
    out = tmp_path / f"cut{src.suffix}"
    argv = ffmpeg.build_command(src, out, COPY, start=start, end=end)
    if src.suffix == ".flac":  # re-encoded (tests/test_flac_trim.py): exact to the sample
        assert argv[argv.index("-c:a") + 1] == "flac" and "-copypriorss:a" not in argv
    else:
        assert argv[argv.index("-c:a") + 1] == "copy"
        assert ("-copypriorss:a" in argv) == bool(start)
    ffmpeg.run(argv)
    packet = packet_seconds(src)
    source = pcm(src)
    first, last = cut_span(source, pcm(out))
    # the source's own end: AAC in Matroska decodes its last frame's padding too (10.027 s)
    want_start, want_end = start or 0.0, end if end is not None else len(source) / 2 / RATE
    # starts with the first packet at or after the start, whose priming (one packet) the decoder drops;
    # an untrimmed AAC start keeps its priming packet (the mp4 edit list is not copied)
    assert -packet - 1 / RATE <= first - want_start <= 2 * packet + 1 / RATE
    assert abs(last - want_end) <= packet + 1 / RATE  # ends with the packet that holds the end
    assert probe(out).duration == pytest.approx(want_end - want_start, abs=2 * packet)


MP3_FRAME = 1152 / RATE
AAC_FRAME = 1024 / RATE


def skip_samples(path: Path) -> int:
    """The samples decoders drop at the start of ``path``: its first packet's skip-samples side data."""
    with av.open(str(path)) as c:
        packet = next(c.demux(c.streams.audio[0]))
        if not packet.has_sidedata("skip_samples"):
            return 0
        return int.from_bytes(bytes(packet.get_sidedata("skip_samples"))[:4], "little")


@pytest.mark.parametrize("end", [None, SECONDS], ids=["no-end", "end-of-file"])
def test_mp3_cut_to_the_end_starts_within_a_frame(sources, tmp_path, end) -> None:
    """ffmpeg 5.1's mp3 muxer turned the end padding of the source's last packet into a LAME delay
    of 3567 (-529 as 12 bits): decoders skipped 4096 samples, the cut started 85-94 ms late. The cut
    now stops before that packet (losing at most its real samples, under one frame) and seeks 529
    samples early, the decoder delay every LAME-aware decoder drops (see ffmpeg._mp3_copy)."""
    src, out = sources / "tone.mp3", tmp_path / "cut.mp3"
    argv = ffmpeg.build_command(src, out, COPY, start=7.0, end=end)
    ffmpeg.run(argv)
    assert skip_samples(out) == 529  # only the decoder delay, not 4096
    first, last = cut_span(pcm(src), pcm(out))
    assert 0 <= first - 7.0 <= MP3_FRAME  # the first frame at or after the start
    # what stream copy allows: the last frame is whole or gone, and keeping the source's last
    # (padded) frame is what breaks the start, so up to one frame of the end is lost
    assert -MP3_FRAME <= last - SECONDS <= 0
    assert last - first == pytest.approx(SECONDS - 7.0, abs=2 * MP3_FRAME)  # both ends within a frame
    assert probe(out).duration == pytest.approx(SECONDS - 7.0, abs=2 * MP3_FRAME)


def test_mp3_cut_in_the_middle_starts_within_a_frame(sources, tmp_path) -> None:
    src, out = sources / "tone.mp3", tmp_path / "cut.mp3"
    ffmpeg.run(ffmpeg.build_command(src, out, COPY, start=2.0, end=5.0))
    first, last = cut_span(pcm(src), pcm(out))
    assert 0 <= first - 2.0 <= MP3_FRAME  # was up to 529 samples more: the decoder delay
    assert 0 <= last - 5.0 <= MP3_FRAME


@pytest.mark.parametrize("name", ["tone.m4a", "aac.mp4"])
def test_aac_cut_with_only_an_end_drops_the_priming(sources, tmp_path, name) -> None:
    """AAC's first packet (pts -1024) is encoder priming, kept out of the timeline by the mp4 edit
    list. ``-avoid_negative_ts make_zero`` shifted the whole track by +1024 samples instead, so the
    cut had no edit list and played the priming: it started 21.3 ms early and lasted 3.029 s."""
    src = sources / name
    out = tmp_path / f"cut{src.suffix}"
    argv = ffmpeg.build_command(src, out, COPY, end=3.0)
    assert "-avoid_negative_ts" not in argv
    ffmpeg.run(argv)
    with av.open(str(out)) as c:
        assert next(c.demux(c.streams.audio[0])).pts == -1024  # the priming, before 0 as in the source
    first, last = cut_span(pcm(src), pcm(out))
    assert first == pytest.approx(0.0, abs=1 / RATE)  # exact: the priming is not played
    assert 0 <= last - 3.0 <= AAC_FRAME  # ends with the packet that holds the end
    assert probe(out).duration == pytest.approx(3.0, abs=AAC_FRAME)


def test_ogg_vorbis_cut_before_and_after(sources, tmp_path) -> None:
    """The case reported: a 3 s cut of Ogg Vorbis lasted 3.99 s (it kept the page before 2 s)."""
    src = sources / "vorbis.ogg"
    out = tmp_path / "cut.ogg"
    argv = ffmpeg.build_command(src, out, COPY, start=2.0, end=5.0)
    old = [a for i, a in enumerate(argv) if a != "-copypriorss:a" and argv[i - 1] != "-copypriorss:a"]
    ffmpeg.run(old)
    assert probe(out).duration > 3.5  # what input seeking alone keeps
    ffmpeg.run(argv)
    assert probe(out).duration == pytest.approx(3.0, abs=0.05)


def test_cover_art_is_kept_and_the_audio_cut_exactly(sources, tmp_path) -> None:
    cover = tmp_path / "cover.png"
    _ffmpeg("-f", "lavfi", "-i", "color=red:s=64x64", "-frames:v", "1", str(cover))
    src = tmp_path / "covered.mp3"
    _ffmpeg(
        "-i", str(sources / "tone.mp3"), "-i", str(cover), "-map", "0", "-map", "1", "-c", "copy",
        "-disposition:v", "attached_pic", str(src),
    )  # fmt: skip
    assert not has_video(src)  # cover art is not video
    out = tmp_path / "cut.mp3"
    argv = ffmpeg.build_command(src, out, COPY, start=2.0, end=5.0)
    assert "-copypriorss:a" in argv
    ffmpeg.run(argv)
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["audio", "video"]
        assert c.streams.video[0].disposition & av.stream.Disposition.attached_pic
    first, last = cut_span(pcm(sources / "tone.mp3"), pcm(out))
    assert 0 <= first - 2.0 <= 2 * 1152 / RATE and abs(last - 5.0) <= 1152 / RATE


def test_copied_video_still_starts_at_the_keyframe_before(tmp_path) -> None:
    src = make_clip(tmp_path / "clip.mkv", seconds=6, gop=50, extra=["-c:a", "libvorbis"])
    assert has_video(src)
    out = tmp_path / "cut.mkv"
    argv = ffmpeg.build_command(src, out, COPY, start=3.0, end=5.0)
    assert "-copypriorss:a" not in argv  # the audio keeps going with its video
    ffmpeg.run(argv)
    assert probe(out).duration == pytest.approx(3.0, abs=0.1)  # from the keyframe at 2 s


def test_re_encoded_video_with_copied_audio_cuts_the_audio_exactly(tmp_path) -> None:
    src = make_clip(tmp_path / "clip.mkv", seconds=6, gop=50, extra=["-c:a", "libvorbis"])
    preset = Preset(name="v", container="mkv", video_codec="libx264", audio_codec="copy", speed_preset="ultrafast")
    out = tmp_path / "cut.mkv"
    argv = ffmpeg.build_command(src, out, preset, start=3.0, end=5.0)
    assert "-copypriorss:a" in argv
    ffmpeg.run(argv)
    with av.open(str(out)) as c:
        audio = c.streams.audio[0]
        seconds = sum(f.samples for f in c.decode(audio)) / audio.rate
    assert seconds == pytest.approx(2.0, abs=0.05)  # not the 3 s from the keyframe at 2 s


def test_has_video_of_unreadable_files(tmp_path) -> None:
    junk = tmp_path / "junk.ogg"
    junk.write_bytes(b"not media at all" * 10)
    assert has_video(junk)  # unknown: keep the behaviour for video (no -copypriorss)
    assert has_video(tmp_path / "missing.ogg")
    argv = ffmpeg.build_command(junk, tmp_path / "out.ogg", COPY, start=1.0, end=2.0)
    assert "-copypriorss:a" not in argv


@pytest.mark.parametrize(("start", "end"), [(3.0, 3.0), (3.0, 1.0), (-0.5, 2.0)])
def test_bad_audio_trim_is_refused(sources, tmp_path, start, end) -> None:
    with pytest.raises(ValidationError):
        ffmpeg.build_command(sources / "vorbis.ogg", tmp_path / "x.ogg", COPY, start=start, end=end)
