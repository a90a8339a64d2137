"""Trimming a FLAC file without a re-encoding preset: the output's header states the trimmed length."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import av
import pytest

from mpr import ffmpeg
from mpr.errors import ValidationError
from mpr.presets import Preset
from mpr.probe import probe
from testkit import ffmpeg_bin

COPY = Preset(name="copy", container="source", video_codec="copy", audio_codec="copy")
COPY_TO_FLAC = Preset(name="flac-copy", container="flac", audio_codec="copy")


def make_flac(path: Path, *, seconds: float, rate: int, extra: list[str] = ()) -> Path:
    """A FLAC of a sine tone from ffmpeg's lavfi source."""
    subprocess.run(
        [ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
        + ["-i", f"sine=frequency=440:sample_rate={rate}:duration={seconds}", *extra, "-c:a", "flac", str(path)],
        check=True,
    )
    return path


@pytest.fixture(scope="module")
def flac16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_flac(tmp_path_factory.mktemp("flac") / "tone.flac", seconds=10, rate=44100)


@pytest.fixture(scope="module")
def flac24(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stereo 24-bit 96 kHz: the re-encode must keep the bit depth, not fall back to 16 bits."""
    path = tmp_path_factory.mktemp("flac24") / "hires.flac"
    return make_flac(path, seconds=10, rate=96000, extra=["-ac", "2", "-sample_fmt", "s32"])


def streaminfo(path: Path) -> tuple[int, int, int, int]:
    """(sample rate, channels, bits per sample, total samples) from the STREAMINFO block, the header
    players read the length from."""
    data = path.read_bytes()[:42]
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO is always the first block
    bits = int.from_bytes(data[18:26], "big")  # rate 20 bits, channels-1 3, bits-1 5, total samples 36
    return bits >> 44, ((bits >> 41) & 0x7) + 1, ((bits >> 36) & 0x1F) + 1, bits & ((1 << 36) - 1)


def streaminfo_samples(path: Path) -> int:
    return streaminfo(path)[3]


def decoded(path: Path) -> tuple[int, int, str]:
    """(samples per channel, sample rate, sample format) of everything that actually decodes."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        return sum(f.samples for f in c.decode(stream)), stream.rate, stream.format.name


def pcm_md5(path: Path, *audio_filter: str) -> str:
    args = [ffmpeg_bin(), "-v", "error", "-i", str(path), *audio_filter, "-f", "md5", "-"]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def trim(src: Path, dst: Path, preset: Preset, start: float | None, end: float | None) -> list[str]:
    argv = ffmpeg.build_command(src, dst, preset, start=start, end=end)
    ffmpeg.run(argv)
    return argv


@pytest.mark.parametrize("preset", [COPY, COPY_TO_FLAC], ids=["copy-preset", "flac-container-audio-copy"])
@pytest.mark.parametrize(("start", "end"), [(2.0, 5.0), (None, 4.0), (7.5, None), (0.0, 0.5)])
def test_trimmed_flac_header_states_the_trimmed_duration(flac16, tmp_path, preset, start, end) -> None:
    out = tmp_path / "cut.flac"
    argv = trim(flac16, out, preset, start, end)
    assert argv[argv.index("-c:a") + 1] == "flac"  # lossless re-encode, not a copy that keeps the old header
    want = (end if end is not None else 10.0) - (start or 0.0)
    samples, rate, _ = decoded(out)
    assert streaminfo_samples(out) == samples
    assert samples == round(want * rate)  # exact to the sample (stream copy snapped to 4096-sample frames)
    assert probe(out).duration == pytest.approx(want, abs=4096 / rate)  # what the job records: within one frame


def test_trimmed_flac_keeps_every_sample_and_the_bit_depth(flac24, tmp_path) -> None:
    out = tmp_path / "cut.flac"
    trim(flac24, out, COPY, 2.0, 5.0)
    samples, rate, fmt = decoded(out)
    assert (samples, rate, fmt) == (3 * 96000, 96000, "s32")
    assert streaminfo(out) == (96000, 2, 24, samples)  # 24 bits: not 16, not padded to 32
    # lossless: the cut decodes to exactly the source's samples 2 s .. 5 s
    assert pcm_md5(out) == pcm_md5(flac24, "-af", f"atrim=start_sample={2 * 96000}:end_sample={5 * 96000}")


def test_untrimmed_flac_and_flac_in_other_containers_are_still_stream_copied(flac16, tmp_path) -> None:
    argv = ffmpeg.build_command(flac16, tmp_path / "same.flac", COPY)
    assert argv[argv.index("-c:a") + 1] == "copy"  # no trim: the source's header is right
    mkv = Preset(name="mkv", container="mkv", audio_codec="copy")
    argv = ffmpeg.build_command(flac16, tmp_path / "cut.mkv", mkv, start=1.0, end=2.0)
    assert argv[argv.index("-c:a") + 1] == "copy"  # Matroska states its own duration
    ffmpeg.run(argv)
    samples, rate, _ = decoded(tmp_path / "cut.mkv")
    assert probe(tmp_path / "cut.mkv").duration == pytest.approx(samples / rate, abs=4096 / rate)
    assert samples / rate == pytest.approx(1.0, abs=2 * 4096 / rate)  # stream copy: whole frames at both ends
    reencode = Preset(name="flac-audio", container="flac", audio_codec="flac", sample_rate=22050)
    argv = ffmpeg.build_command(flac16, tmp_path / "resampled.flac", reencode, start=1.0, end=2.0)
    assert argv[argv.index("-ar") + 1] == "22050"  # a real encoding preset is left as it is


@pytest.mark.parametrize(("start", "end"), [(5.0, 5.0), (5.0, 2.0), (-1.0, 2.0)])
def test_bad_trim_of_a_flac_is_refused(flac16, tmp_path, start, end) -> None:
    with pytest.raises(ValidationError):
        ffmpeg.build_command(flac16, tmp_path / "x.flac", COPY, start=start, end=end)


async def test_a_trim_job_on_a_flac_asset_records_the_trimmed_duration(db, media, flac16) -> None:
    from mpr import scan, service
    from mpr.execute import run_job
    from mpr.models import JobStatus, TranscodeJob

    shutil.copyfile(flac16, media["in"] / "tone.flac")
    asset, _ = await scan.register("tone.flac")
    job = await service.create_job(asset.id, None, trim_start=2.0, trim_end=5.0, submit=False, executor="inline")
    await asyncio.to_thread(run_job, job.id)
    job = await TranscodeJob.get(id=job.id)
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.output_path.endswith(".flac")
    assert job.output_duration == pytest.approx(3.0, abs=4096 / 44100)
    out = media["out"] / job.output_path
    assert streaminfo_samples(out) == decoded(out)[0] == 3 * 44100
