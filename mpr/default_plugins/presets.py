"""Built-in plugin: the presets every MPR install has."""

from __future__ import annotations

from mpr import hookimpl


@hookimpl
def register_presets(register):
    from mpr.builtin_presets import BUILTIN_PRESETS

    for preset in BUILTIN_PRESETS:
        register(preset)
