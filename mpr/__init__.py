"""MPR, the Media Processor: a media transcoding platform built as a plugin framework."""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mpr")
"""Marker for plugin hook implementations: ``@hookimpl def register_presets(register): ...``."""

__all__ = ["__version__", "hookimpl"]
