"""An asset's ``container`` is the file type users know (mkv, webm, m4a, wmv...), not the demuxer's name.

PyAV names demuxers, and one demuxer reads several file types: ``matroska,webm``
reads .mkv/.mka/.webm, ``mov,mp4,m4a,3gp,3g2,mj2`` the ISO family, ``asf`` .wmv
and .wma. The extension says which one the user has; without a known extension
the MP4 major brand or the streams decide. The demuxer's name stays in the raw
probe (``probe["format"]``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mpr.errors import ProbeError
from mpr.probe import probe
from testkit import ffmpeg_bin

VIDEO = ["-f", "lavfi", "-i", "testsrc2=s=64x48:r=10:d=1"]
AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:d=1"]
# file name -> (ffmpeg arguments, container stored, demuxer name PyAV reports)
FILES = {
    "clip.mp4": ([*VIDEO, *AUDIO, "-c:v", "libx264", "-c:a", "aac"], "mp4", "mov,mp4,m4a,3gp,3g2,mj2"),
    "clip.mov": ([*VIDEO, *AUDIO, "-c:v", "libx264", "-c:a", "aac"], "mov", "mov,mp4,m4a,3gp,3g2,mj2"),
    "clip.m4v": ([*VIDEO, "-c:v", "libx264"], "m4v", "mov,mp4,m4a,3gp,3g2,mj2"),
    "tone.m4a": ([*AUDIO, "-c:a", "aac"], "m4a", "mov,mp4,m4a,3gp,3g2,mj2"),
    "clip.mkv": ([*VIDEO, *AUDIO, "-c:v", "libx264", "-c:a", "libvorbis"], "mkv", "matroska,webm"),
    "tone.mka": ([*AUDIO, "-c:a", "libvorbis"], "mka", "matroska,webm"),
    "clip.webm": ([*VIDEO, *AUDIO, "-c:v", "libvpx", "-c:a", "libopus"], "webm", "matroska,webm"),
    "clip.wmv": ([*VIDEO, *AUDIO, "-c:v", "wmv2", "-c:a", "wmav2"], "wmv", "asf"),
    "tone.wma": ([*AUDIO, "-c:a", "wmav2"], "wma", "asf"),
    "clip.avi": ([*VIDEO, *AUDIO, "-c:v", "mpeg4", "-c:a", "mp3"], "avi", "avi"),
    "clip.ts": ([*VIDEO, *AUDIO, "-c:v", "libx264", "-c:a", "aac"], "ts", "mpegts"),
    "clip.flv": ([*VIDEO, *AUDIO, "-c:v", "flv", "-c:a", "mp3"], "flv", "flv"),
    "clip.ogv": ([*VIDEO, *AUDIO, "-c:v", "libtheora", "-c:a", "libvorbis"], "ogv", "ogg"),
    "tone.ogg": ([*AUDIO, "-c:a", "libvorbis"], "ogg", "ogg"),
    "tone.opus": ([*AUDIO, "-c:a", "libopus"], "opus", "ogg"),
    "tone.flac": ([*AUDIO, "-c:a", "flac"], "flac", "flac"),
    "tone.wav": ([*AUDIO, "-c:a", "pcm_s16le"], "wav", "wav"),
    "tone.mp3": ([*AUDIO, "-c:a", "libmp3lame"], "mp3", "mp3"),
    "tone.aac": ([*AUDIO, "-c:a", "aac"], "aac", "aac"),
    "tone.aiff": ([*AUDIO, "-c:a", "pcm_s16be"], "aiff", "aiff"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("containers")
    for name, (args, _, _) in FILES.items():
        argv = [ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y", *args, "-shortest", str(folder / name)]
        subprocess.run(argv, check=True)
    return folder


@pytest.mark.parametrize("name", list(FILES))
def test_container_is_the_file_type(files, name) -> None:
    _, container, demuxer = FILES[name]
    result = probe(files / name)
    assert result.container == container
    assert result.raw["format"] == demuxer  # the demuxer's name is still recorded


@pytest.mark.parametrize(
    ("name", "container"),
    [
        ("clip.mp4", "mp4"),  # isom brand
        ("clip.mov", "mov"),  # "qt  " brand
        ("clip.m4v", "m4v"),
        ("tone.m4a", "m4a"),  # "M4A " brand
        ("clip.mkv", "mkv"),
        ("tone.mka", "mka"),  # Matroska without video
        ("clip.webm", "mkv"),  # WebM is Matroska: without its extension, the generic name
        ("clip.wmv", "wmv"),
        ("tone.wma", "wma"),  # ASF without video
        ("clip.ts", "ts"),
        ("tone.opus", "ogg"),
        ("tone.mp3", "mp3"),
    ],
)
def test_without_a_known_extension_the_content_decides(files, tmp_path, name, container) -> None:
    for other in ("media.bin", "noextension"):
        copy = tmp_path / other
        shutil.copyfile(files / name, copy)
        assert probe(copy).container == container


@pytest.mark.parametrize(
    ("name", "renamed", "container"),
    [
        ("clip.mkv", "mislabelled.mp4", "mkv"),  # an extension of another demuxer is not believed
        ("clip.mp4", "mislabelled.mkv", "mp4"),
        ("clip.mov", "movie.mp4", "mp4"),  # same family: the user's extension wins
        ("tone.m4a", "tone.mp4", "mp4"),
        ("clip.mkv", "clip.webm", "webm"),
        ("clip.wmv", "clip.asf", "asf"),
        ("tone.ogg", "tone.oga", "oga"),
        ("clip.mp4", "CLIP.MOV", "mov"),  # case-insensitive
    ],
)
def test_the_extension_picks_within_the_demuxer_s_family(files, tmp_path, name, renamed, container) -> None:
    shutil.copyfile(files / name, tmp_path / renamed)
    assert probe(tmp_path / renamed).container == container


def test_bad_files_still_fail_with_a_readable_message(tmp_path) -> None:
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"\x1a\x45\xdf\xa3 not really matroska" * 4)
    with pytest.raises(ProbeError, match="junk.mkv"):
        probe(junk)
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    with pytest.raises(ProbeError, match="empty"):
        probe(empty)


@pytest.fixture
async def app(monkeypatch):
    from testkit import serving

    async for start in serving(monkeypatch):
        yield start


async def test_graphql_shows_the_file_type(db, media, files, app) -> None:
    from mpr import scan

    names = ["clip.mkv", "clip.webm", "clip.wmv", "clip.mov", "tone.m4a", "tone.ogg"]
    for name in names:
        shutil.copyfile(files / name, media["in"] / name)
        await scan.register(name)
    api = await app()
    assets = (await api.ok("{ assets { path container } }"))["assets"]
    got = {a["path"]: a["container"] for a in assets}
    assert got == {name: FILES[name][1] for name in names}
