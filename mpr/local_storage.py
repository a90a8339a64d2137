"""Local filesystem storage: the ``file`` backend for plain-path and ``file://`` media roots.

Keys are checked with :func:`mpr.storage.safe_key` and then resolved against
the real root; a key that reaches outside the root through a symlink is
refused as well. Writes go to a temp file in the target directory and are
renamed into place, so readers never see a partial object.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mpr.errors import NotFound, StorageError
from mpr.storage import ObjectInfo, safe_key

if TYPE_CHECKING:
    from mpr.settings import Settings

TMP_PREFIX = ".mpr-tmp-"


def root_path(root: str) -> Path:
    """The absolute directory for a ``file://`` URL or plain path root."""
    if root.startswith("file://"):
        root = urllib.parse.unquote(urllib.parse.urlparse(root).path)
    return Path(root).expanduser().absolute()


class _RangeReader(io.RawIOBase):
    """A read-only raw stream over bytes ``start`` .. ``end`` (inclusive) of an open file."""

    def __init__(self, fh: BinaryIO, start: int, end: int) -> None:
        self._fh = fh
        self._fh.seek(start)
        self._remaining = max(0, end - start + 1)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._remaining <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), self._remaining)]
        n = self._fh.readinto(view)
        n = n or 0
        self._remaining -= n
        return n

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


class LocalStorage:
    """A media root on the local filesystem (see :class:`mpr.storage.Storage`)."""

    scheme = "file"

    def __init__(self, root: str, settings: Settings | None = None) -> None:
        self.root = root
        self.base = root_path(root)
        self._public_base: str | None = None
        if settings is not None:
            if settings.media_base_url and root == settings.media_in:
                self._public_base = settings.media_base_url
            elif settings.media_out_base_url and root == settings.media_out:
                self._public_base = settings.media_out_base_url

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.base)!r})"

    # -- key → path -------------------------------------------------------------------------

    def _real_base(self) -> Path:
        return Path(os.path.realpath(self.base))

    def _path(self, key: str) -> Path:
        """The path for ``key``; refuses keys (and symlinks) that lead outside the root."""
        key = safe_key(key)
        path = self.base / key
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(self._real_base()):
            raise StorageError(f"storage key {key!r} leads outside the media root")
        return path

    def _info(self, key: str, path: Path) -> ObjectInfo:
        st = path.stat()
        return ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime)

    # -- Storage API ------------------------------------------------------------------------

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every file under ``prefix`` (a key prefix), recursively, in key order.

        Symlinks that point outside the root and in-flight temp files are skipped.
        """
        if prefix.rstrip("/"):
            # only the trailing "/" may go: "/etc" stripped to "etc" would pass, then base / "/etc" is /etc
            safe_key(prefix.rstrip("/"))  # refuses "../" and absolute prefixes
        base = self.base
        if not base.is_dir():
            return
        real_base = self._real_base()
        # start the walk at the deepest directory the prefix names, for speed
        start_dir = base
        if "/" in prefix:
            start_dir = base / prefix.rsplit("/", 1)[0]
            if not start_dir.is_dir():
                return
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(start_dir, followlinks=False):
            # descend into symlinked directories only when they stay inside the root
            for d in list(dirnames):
                full = os.path.join(dirpath, d)
                if os.path.islink(full):
                    dirnames.remove(d)
            for name in filenames:
                if name.startswith(TMP_PREFIX):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(base).as_posix()
                if prefix and not key.startswith(prefix):
                    continue
                real = Path(os.path.realpath(full))
                if not real.is_relative_to(real_base) or not real.is_file():
                    continue
                try:
                    found.append(self._info(key, real))
                except OSError:
                    continue  # vanished while listing
        found.sort(key=lambda info: info.key)
        yield from found

    def stat(self, key: str) -> ObjectInfo:
        """Size and mtime of ``key``; NotFound if it is not a file."""
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"{safe_key(key)} does not exist in {self.root}")
        return self._info(safe_key(key), path)

    def exists(self, key: str) -> bool:
        """True if ``key`` is a file under the root."""
        return self._path(key).is_file()

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """A binary stream of bytes ``start`` .. ``end`` (inclusive; None = to the end of the file)."""
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"{safe_key(key)} does not exist in {self.root}")
        size = path.stat().st_size
        if start < 0 or (end is not None and end < start):
            raise StorageError(f"invalid byte range {start}-{end} for {safe_key(key)}")
        last = size - 1 if end is None else min(end, size - 1)
        fh = open(path, "rb")  # noqa: SIM115 - handed to the caller, closed with the reader
        if start == 0 and last == size - 1:
            return fh
        return io.BufferedReader(_RangeReader(fh, start, last))  # type: ignore[return-value]

    def put(self, key: str, local_file: Path) -> ObjectInfo:
        """Copy ``local_file`` to ``key`` atomically (temp file in the same directory, then rename)."""
        norm = safe_key(key)
        path = self._path(norm)
        local_file = Path(local_file)
        if not local_file.is_file():
            raise StorageError(f"cannot store {norm}: {local_file} is not a file")
        path.parent.mkdir(parents=True, exist_ok=True)
        # the parent may have been created through a symlink: check again now that it exists
        self._path(norm)
        if path.exists() and os.path.samefile(path, local_file):
            return self._info(norm, path)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(local_file, "rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._info(norm, path)

    def delete(self, key: str) -> None:
        """Remove ``key``; no error if it is already gone."""
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise StorageError(f"{safe_key(key)} is a directory, not a file") from None

    def url(self, key: str, expires: int = 3600) -> str | None:
        """The public URL when MEDIA_BASE_URL / MEDIA_OUT_BASE_URL is set for this root, else None.

        None means "served by MPR itself" (``/media/in/...``, ``/media/out/...``).
        """
        norm = safe_key(key)
        if not self._public_base:
            return None
        return self._public_base.rstrip("/") + "/" + urllib.parse.quote(norm)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """The file's real path (no copy is needed for local storage)."""
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"{safe_key(key)} does not exist in {self.root}")
        yield path

    def local_path(self, key: str) -> Path | None:
        """The absolute path ``key`` has (or would have) under the root."""
        return self._path(key)

    def locate(self, key: str = "") -> str:
        """The resolved path of ``key`` (symlinks followed), or of the root for ``""``."""
        return Path(os.path.realpath(self.base / safe_key(key) if key else self.base)).as_posix()
