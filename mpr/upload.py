"""Uploads: a media file streamed into MEDIA_IN, then registered and probed as an asset.

The bytes never sit in memory as a whole: they are written chunk by chunk to
a temp file, and the file appears under its name only once it is complete:

- local MEDIA_IN: the temp file (``.mpr-tmp-*``, skipped by listings) is in
  the target folder and is hard-linked to its final name, which fails if the
  name was taken meanwhile (then the next free name is tried);
- remote MEDIA_IN (S3, GCS): the temp file is in ``MPR_VAR_DIR/uploads`` and
  is stored with ``Storage.put`` (an S3 put is atomic) once complete.

An existing name is never overwritten: ``clip.mp4`` becomes ``clip (1).mp4``,
``clip (2).mp4``... (a name an asset still holds counts as taken, even when
its file is missing). Keys are checked by :func:`mpr.storage.safe_key` and the
extension by :func:`mpr.scan.is_media`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import posixpath
import tempfile
import time
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mpr.errors import MprError, ValidationError
from mpr.local_storage import TMP_PREFIX, LocalStorage
from mpr.models import MediaAsset, TranscodeJob
from mpr.scan import MEDIA_EXTENSIONS, OutputGuard, is_media, register
from mpr.storage import Storage, key_within, media_in, media_out, safe_key

if TYPE_CHECKING:
    from mpr.settings import Settings

log = logging.getLogger(__name__)

WRITE_BATCH = 1024 * 1024  # bytes gathered before one write in a worker thread
MAX_NAME_TRIES = 1000
# Past the limit, up to this much more of the body is read and dropped before answering 413: a client
# sends its whole body before reading the answer, and a connection closed on unread bytes is reset, so
# a body a little over the limit gets a clean 413 rather than a broken connection.
DRAIN_BYTES = 1024 * 1024
# An upload's temp file: its own prefix (skipped by listings like every TMP_PREFIX file), so the start-up
# cleanup removes only these; the uploading process holds an flock on it while the body arrives.
UPLOAD_TMP_PREFIX = TMP_PREFIX + "upload-"
STALE_UPLOAD_SECONDS = 60.0  # an unlocked upload temp file at least this old is left by a crash
MAX_NAME_BYTES = 200  # UTF-8 bytes of one folder or file name (255 is the usual limit; room for " (999)")
MAX_KEY_CHARS = 1000  # the whole key (an asset's path column holds 1024)
# control, format (bidi overrides, zero-width) and surrogate characters: invisible or misleading in a name
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
# ... except the zero-width joiner inside an emoji sequence (👨‍👩‍👧) and the variation selectors picking a
# symbol's emoji or text style (❤️, ↔︎), which are refused elsewhere (invisible there too)
_ZWJ, _VS16, _KEYCAP = "\u200d", "\ufe0f", "\u20e3"
_VARIATION_SELECTORS = frozenset("\ufe0e\ufe0f")


class UploadTooLarge(ValidationError):
    """The upload is larger than MPR_UPLOAD_MAX_BYTES (HTTP 413)."""


def _emoji_part(c: str) -> bool:
    """What a zero-width joiner may join: a pictograph (So), a skin-tone modifier or a regional indicator."""
    return unicodedata.category(c) == "So" or 0x1F3FB <= ord(c) <= 0x1F3FF or 0x1F1E6 <= ord(c) <= 0x1F1FF


def _invisible(key: str, i: int) -> bool:
    """``key[i]`` is a control, format or surrogate character, or a joiner or selector outside an emoji."""
    c, prev, nxt = key[i], key[i - 1] if i else "", key[i + 1 : i + 2]
    if c in _VARIATION_SELECTORS:  # after a symbol, or a keycap's digit, # or * (1️⃣)
        return not prev or not (unicodedata.category(prev)[0] == "S" or (prev in "0123456789#*" and nxt == _KEYCAP))
    if c == _ZWJ:  # between two emoji, the first maybe with its selector (🏳️‍🌈)
        left = key[i - 2] if prev == _VS16 and i >= 2 else prev
        return not (left and nxt and _emoji_part(left) and _emoji_part(nxt))
    return unicodedata.category(c) in _REFUSED_CATEGORIES


def check_name(name: str) -> str:
    """The MEDIA_IN key for an upload named ``name``; StorageError if it escapes, ValidationError if not media.

    The name is NFC-normalised; control, format and surrogate characters (but a zero-width joiner
    between two emoji), a variation selector not after a symbol, a folder or file name over
    MAX_NAME_BYTES bytes and a key over MAX_KEY_CHARS are refused (the filesystem would fail later).
    """
    key = safe_key(unicodedata.normalize("NFC", name) if isinstance(name, str) else name)
    if any(_invisible(key, i) for i in range(len(key))):
        raise ValidationError(f"{key!r} holds control or invisible characters; rename the file")
    if len(key) > MAX_KEY_CHARS or any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in key.split("/")):
        raise ValidationError(
            f"the name is too long: at most {MAX_NAME_BYTES} bytes per folder or file name, "
            f"{MAX_KEY_CHARS} characters in all"
        )
    if not is_media(key) or posixpath.basename(key).startswith(TMP_PREFIX):
        raise ValidationError(
            f"{posixpath.basename(key)!r} is not a supported media file "
            f"(extensions: {', '.join(sorted(MEDIA_EXTENSIONS))})"
        )
    return key


def candidates(key: str) -> list[str]:
    """``key``, then ``stem (1).ext``, ``stem (2).ext``... in the same folder."""
    folder, name = posixpath.split(key)
    stem, ext = posixpath.splitext(name)
    names = [name, *(f"{stem} ({n}){ext}" for n in range(1, MAX_NAME_TRIES))]
    return [posixpath.join(folder, n) if folder else n for n in names]


async def too_large(limit: int, rest: AsyncIterator[bytes]) -> UploadTooLarge:
    """The error for a body over ``limit``, after reading (and dropping) up to DRAIN_BYTES of ``rest``."""
    drained = 0
    async for chunk in rest:
        drained += len(chunk)
        if drained > DRAIN_BYTES:
            break
    return UploadTooLarge(f"the upload is larger than the limit of {limit} bytes (MPR_UPLOAD_MAX_BYTES)")


async def _receive(chunks: AsyncIterator[bytes], out: BinaryIO, limit: int) -> int:
    """Write ``chunks`` to ``out`` (in batches, in a worker thread); UploadTooLarge past ``limit`` bytes."""
    total = 0
    batch = bytearray()
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise await too_large(limit, chunks)
        batch += chunk
        if len(batch) >= WRITE_BATCH:
            await asyncio.to_thread(out.write, bytes(batch))
            batch.clear()
    if batch:
        await asyncio.to_thread(out.write, bytes(batch))
    await asyncio.to_thread(out.flush)
    return total


async def _name_taken(key: str, settings: Settings) -> bool:
    """An asset holds ``key``, or (MEDIA_OUT overlapping MEDIA_IN) a job will write its output there."""
    if await MediaAsset.filter(path=key).exists():
        return True
    out_key = _media_out_key(key, settings)
    return out_key is not None and await TranscodeJob.filter(output_path=out_key).exists()


def _media_out_key(key: str, settings: Settings) -> str | None:
    """The MEDIA_OUT key of the file MEDIA_IN ``key`` names, when the roots overlap (folders through
    symlinks, or one bucket: :func:`mpr.storage.key_within`)."""
    try:
        out = media_out(settings)
    except MprError:  # MEDIA_OUT's backend is not installed here: no job of this process writes there
        return None
    return key_within(out, media_in(settings), key)


def check_not_output_folder(key: str, settings: Settings) -> None:
    """ValidationError when ``key`` lies in a MEDIA_OUT folder inside MEDIA_IN: job outputs go there
    and a scan never takes a file there for a source (:class:`mpr.scan.OutputGuard`)."""
    subtree = OutputGuard(settings).subtree
    if subtree is not None and key.startswith(subtree):
        raise ValidationError(
            f"{key!r} is inside MEDIA_OUT (the folder {subtree.rstrip('/')!r} of MEDIA_IN), where job outputs "
            "go and nothing is a source: upload it to another folder"
        )


async def _place_local(storage: Storage, key: str, tmp: Path, settings: Settings) -> str:
    """Hard-link ``tmp`` to the first free candidate name; the key it got."""
    for candidate in candidates(key):
        if await _name_taken(candidate, settings):
            continue
        target = storage.local_path(candidate)
        try:
            await asyncio.to_thread(os.link, tmp, target)
        except FileExistsError:
            continue
        except OSError as exc:  # a filesystem without hard links: copy (Storage.put renames a temp file)
            log.debug("cannot hard-link the upload (%s); copying it", exc)
            if await asyncio.to_thread(storage.exists, candidate):
                continue
            await asyncio.to_thread(storage.put, candidate, tmp)
        return candidate
    raise ValidationError(f"no free name for {key!r} in MEDIA_IN: rename the file")


async def _place_remote(storage: Storage, key: str, tmp: Path, settings: Settings) -> str:
    """Store ``tmp`` under the first candidate name that neither exists nor belongs to an asset."""
    for candidate in candidates(key):
        if await _name_taken(candidate, settings) or await asyncio.to_thread(storage.exists, candidate):
            continue
        await asyncio.to_thread(storage.put, candidate, tmp)
        return candidate
    raise ValidationError(f"no free name for {key!r} in MEDIA_IN: rename the file")


async def upload(
    name: str,
    chunks: AsyncIterator[bytes],
    *,
    length: int | None = None,
    settings: Settings | None = None,
) -> tuple[MediaAsset, bool]:
    """Store the stream ``chunks`` as MEDIA_IN ``name`` (or the next free name), register and probe it.

    Returns (asset, renamed). ``length`` is the announced size (Content-Length),
    checked before anything is read. Raises StorageError (escaping key),
    ValidationError (not a media file), UploadTooLarge; nothing stays behind
    when any of them (or a dropped connection) stops the upload. With
    MPR_AUTO_PRESET the new asset's job is created (:mod:`mpr.auto`).
    """
    from mpr.settings import get_settings

    settings = settings or get_settings()
    key = check_name(name)
    check_not_output_folder(key, settings)
    limit = settings.upload_max_bytes
    if length is not None and length > limit:
        raise await too_large(limit, chunks)
    storage = media_in(settings)
    local = storage.local_path(key)
    if local is not None:
        folder = local.parent
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        storage.local_path(key)  # the folder may have been made through a symlink: check again
    else:
        folder = settings.var_path / "uploads"
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=UPLOAD_TMP_PREFIX, dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX)  # "in use" for remove_stale_uploads; gone with the process
            size = await _receive(chunks, out, limit)
            os.chmod(tmp, 0o644)
            if local is not None:
                stored = await _place_local(storage, key, tmp, settings)
            else:
                stored = await _place_remote(storage, key, tmp, settings)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    log.info("upload: %s stored in MEDIA_IN (%d bytes)", stored, size)
    asset, created = await register(stored, size=size, settings=settings, auto=True)
    if created and settings.auto_preset:  # MPR_AUTO_PRESET: its job now (errors are logged; a scan retries)
        from mpr.auto import queue_pending

        await queue_pending(settings, [asset.id])
    return asset, stored != key


def remove_stale_uploads(settings: Settings, *, older_than: float = STALE_UPLOAD_SECONDS) -> list[Path]:
    """Remove the upload temp files a crashed or killed server left behind; the paths removed.

    Looks in ``MPR_VAR_DIR/uploads`` and (local MEDIA_IN) every folder of MEDIA_IN, without following
    symlinks. A file some process still writes (it holds the file's flock) or that is younger than
    ``older_than`` seconds is kept. Run at start-up by ``mpr serve`` (one process of several).
    """
    folders: list[Path] = [settings.var_path / "uploads"]
    with contextlib.suppress(MprError):
        source = media_in(settings)
        if isinstance(source, LocalStorage):
            folders.append(source.base)
    removed: list[Path] = []
    now = time.time()
    for top in folders:
        for dirpath, _dirs, files in os.walk(top, followlinks=False):
            for name in files:
                if name.startswith(UPLOAD_TMP_PREFIX) and _remove_if_stale(Path(dirpath) / name, now - older_than):
                    removed.append(Path(dirpath) / name)
    if removed:
        log.info("removed %d upload temp file(s) left by an interrupted upload", len(removed))
    return removed


def _remove_if_stale(path: Path, before: float) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_mtime > before:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # an upload in progress holds it
        path.unlink()
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
