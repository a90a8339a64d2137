"""Built-in plugin: local filesystem storage for plain paths and ``file://`` roots."""

from __future__ import annotations

from mpr import hookimpl


@hookimpl
def register_storage_backends(register):
    from mpr.local_storage import LocalStorage

    register("file", LocalStorage)
