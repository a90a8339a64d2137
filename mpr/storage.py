"""The storage interface and the one place where storage keys are checked.

Media lives under two roots, ``MEDIA_IN`` and ``MEDIA_OUT``; each is a plain
path or a URL (``s3://bucket/prefix/``) served by a backend registered for
its scheme. Keys are always relative to the root, with ``/`` separators.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from mpr.errors import StorageError
from mpr.plugins import load_plugins, missing_plugin_error

if TYPE_CHECKING:
    from mpr.settings import Settings

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass(frozen=True)
class ObjectInfo:
    """What a backend knows about one stored object."""

    key: str
    size: int
    mtime: float = 0.0


@runtime_checkable
class Storage(Protocol):
    """A media root. Every method takes keys relative to the root and checks them with :func:`safe_key`.

    A backend may also define ``locate(key: str = "") -> str``: one absolute name
    for ``key`` (the root itself for ``""``) comparable with other roots' names,
    e.g. a resolved path or ``s3://bucket/prefix/key``; :func:`key_within` uses it
    to tell when MEDIA_OUT overlaps MEDIA_IN. Without it, roots never overlap.
    """

    root: str

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, recursively, in key order."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Size and mtime of ``key``; raises NotFound if it does not exist."""
        ...

    def exists(self, key: str) -> bool:
        """True if ``key`` exists."""
        ...

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """A binary stream of bytes ``start`` .. ``end`` (inclusive, None = to the end)."""
        ...

    def put(self, key: str, local_file: Path) -> ObjectInfo:
        """Store ``local_file`` as ``key`` atomically (readers never see a partial object)."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; no error if it is already gone."""
        ...

    def url(self, key: str, expires: int = 3600) -> str | None:
        """A URL a browser can fetch (public base or presigned), or None for local files served by MPR."""
        ...

    def local_copy(self, key: str) -> AbstractContextManager[Path]:
        """A local path with the object's bytes for ffmpeg; a temp download for remote backends."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The object's real filesystem path when the backend is local, else None."""
        ...


def safe_key(key: str) -> str:
    """Return ``key`` normalised, or raise StorageError if it could escape its root.

    Rejects absolute paths, ``..`` segments (also URL-encoded), NUL bytes,
    backslashes, drive letters and empty keys.
    """
    if not isinstance(key, str) or key == "":
        raise StorageError("storage key must be a non-empty relative path")
    decoded = key
    for _ in range(3):  # catch double/triple URL-encoding of "../"
        nxt = urllib.parse.unquote(decoded)
        if nxt == decoded:
            break
        decoded = nxt
    for candidate in (key, decoded):
        if "\x00" in candidate:
            raise StorageError("storage key must not contain NUL bytes")
        if "\\" in candidate:
            raise StorageError(f"storage key must use '/' separators, got {key!r}")
        if candidate.startswith("/") or re.match(r"^[a-zA-Z]:", candidate):
            raise StorageError(f"storage key must be relative to the media root, got {key!r}")
        if ".." in candidate.split("/"):
            raise StorageError(f"storage key must not contain '..', got {key!r}")
    norm = posixpath.normpath(key)
    if norm in ("", ".") or norm.startswith("../"):
        raise StorageError(f"storage key {key!r} does not name a file under the media root")
    return norm


def scheme_of(root: str) -> str:
    """The storage scheme of a root: ``s3`` for ``s3://...``, ``file`` for plain paths."""
    match = _SCHEME.match(root)
    return match.group(1).lower() if match else "file"


def key_within(root: Storage, other: Storage, key: str) -> str | None:
    """The key in ``root`` of the object ``other`` names ``key``, when it lies under ``root``.

    For overlapping roots (MEDIA_OUT inside MEDIA_IN, the same folder or bucket
    prefix, or a symlink into it); None when it lies elsewhere or a backend has
    no ``locate``.
    """
    locate_root, locate_other = getattr(root, "locate", None), getattr(other, "locate", None)
    if locate_root is None or locate_other is None:
        return None
    base = locate_root("").rstrip("/") + "/"
    where = locate_other(safe_key(key))
    return safe_key(where[len(base) :]) if where.startswith(base) and len(where) > len(base) else None


_cache: dict[str, Storage] = {}


def get_storage(root: str, settings: Settings | None = None) -> Storage:
    """The backend for ``root`` (a path or URL), built once per process per root."""
    from mpr.settings import get_settings

    if root not in _cache:
        registry = load_plugins()
        scheme = scheme_of(root)
        factory = registry.storage_backends.get(scheme)
        if factory is None:
            raise missing_plugin_error("storage", scheme, list(registry.storage_backends))
        _cache[root] = factory(root, settings or get_settings())
    return _cache[root]


def media_in(settings: Settings | None = None) -> Storage:
    """The storage for MEDIA_IN (source media)."""
    from mpr.settings import get_settings

    settings = settings or get_settings()
    return get_storage(settings.media_in, settings)


def media_out(settings: Settings | None = None) -> Storage:
    """The storage for MEDIA_OUT (transcoded output)."""
    from mpr.settings import get_settings

    settings = settings or get_settings()
    return get_storage(settings.media_out, settings)


def reset_storage() -> None:
    """Forget cached backends (tests, settings changes)."""
    _cache.clear()
