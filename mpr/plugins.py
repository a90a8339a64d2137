"""The plugin manager: core default plugins plus the ``mpr`` entry-point group.

Nothing happens at import time: :func:`load_plugins` builds the manager once
and collects what every plugin registers into a :class:`Registry`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from mpr import hookspecs
from mpr.errors import PluginError

if TYPE_CHECKING:
    from mpr.events import EventSink
    from mpr.executors import Executor
    from mpr.presets import Preset
    from mpr.settings import Settings
    from mpr.storage import Storage

log = logging.getLogger(__name__)

DEFAULT_PLUGINS = (
    "mpr.default_plugins.file_storage",
    "mpr.default_plugins.presets",
    "mpr.default_plugins.sinks",
    "mpr.default_plugins.notify",
)

# Which pip package provides a well-known executor or storage scheme, for the
# "not installed" error message.
KNOWN_PROVIDERS = {
    ("executor", "local"): "mpr-local (pip install -e plugins/mpr_local)",
    ("executor", "lambda"): "mpr-lambda (pip install -e plugins/mpr_lambda)",
    ("executor", "gcp"): "mpr-gcp (pip install -e plugins/mpr_gcp)",
    ("storage", "s3"): "mpr-storage-s3 (pip install -e plugins/mpr_storage_s3)",
    ("storage", "gs"): "mpr-storage-s3 (pip install -e plugins/mpr_storage_s3)",
}


@dataclass
class Registry:
    """What the loaded plugins registered, and which plugin registered each thing."""

    executors: dict[str, type[Executor]] = field(default_factory=dict)
    storage_backends: dict[str, Callable[[str, Settings], Storage]] = field(default_factory=dict)
    presets: dict[str, Preset] = field(default_factory=dict)
    event_sinks: list[EventSink] = field(default_factory=list)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)


_pm: pluggy.PluginManager | None = None
_registry: Registry | None = None
_lock = threading.RLock()


# entry-point name -> distribution name, for plugins loaded from entry points
_dist_names: dict[str, str] = {}


def plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    """The name a plugin is known by: its distribution for entry points, else its module."""
    name = pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))
    return _dist_names.get(name, name)


def get_plugin_manager(load_only: tuple[str, ...] | None = None) -> pluggy.PluginManager:
    """Build a plugin manager with the default plugins and the ``mpr`` entry points.

    ``load_only`` (from ``MPR_LOAD_PLUGINS``) restricts entry points to these
    distribution or entry-point names; the core's defaults always load.
    """
    pm = pluggy.PluginManager("mpr")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    for ep in importlib.metadata.entry_points(group="mpr"):
        dist_name = ep.dist.name if ep.dist else ep.name
        if load_only is not None and ep.name not in load_only and dist_name not in load_only:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take MPR down silently
            raise PluginError(f"plugin {dist_name!r} failed to import: {exc}") from exc
        pm.register(plugin, name=ep.name)
        _dist_names[ep.name] = dist_name
    pm.check_pending()
    return pm


def _collect(pm: pluggy.PluginManager, settings: Settings) -> Registry:
    reg = Registry()

    def owner_of(impl: pluggy.HookImpl) -> str:
        return plugin_name(pm, impl.plugin)

    def make_register(kind: str, owner: str) -> Callable[..., None]:
        def register(name_or_obj: Any, value: Any = None) -> None:
            if kind == "executor":
                name, target = str(name_or_obj), reg.executors
            elif kind == "storage":
                name, target = str(name_or_obj), reg.storage_backends
            elif kind == "preset":
                value = name_or_obj
                name, target = value.name, reg.presets
            else:
                reg.event_sinks.append(name_or_obj)
                return
            if name in target:
                raise PluginError(f"{kind} {name!r} registered twice: by {reg.owners[(kind, name)]} and by {owner}")
            target[name] = value
            reg.owners[(kind, name)] = owner

        return register

    for kind, hook in (
        ("executor", pm.hook.register_executors),
        ("storage", pm.hook.register_storage_backends),
        ("preset", pm.hook.register_presets),
    ):
        for impl in hook.get_hookimpls():
            owner = owner_of(impl)
            impl.function(register=make_register(kind, owner))
    for impl in pm.hook.register_event_sinks.get_hookimpls():
        kwargs = {"register": make_register("sink", owner_of(impl)), "settings": settings}
        impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
    return reg


def load_plugins(settings: Settings | None = None) -> Registry:
    """Load plugins once (thread-safe) and return the registry of what they registered."""
    global _pm, _registry
    with _lock:
        if _registry is None:
            from mpr.settings import get_settings

            settings = settings or get_settings()
            pm = get_plugin_manager(settings.load_plugins)
            _registry = _collect(pm, settings)
            _pm = pm
        return _registry


def plugin_manager() -> pluggy.PluginManager:
    """The loaded plugin manager (loads plugins on first use)."""
    load_plugins()
    assert _pm is not None
    return _pm


def reset_plugins() -> None:
    """Forget loaded plugins so the next :func:`load_plugins` reloads (tests, settings changes)."""
    global _pm, _registry
    with _lock:
        _pm, _registry = None, None


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register an extra plugin object (a module or class with hookimpls) and reload the registry.

    Used by tests and by embedders; third-party packages use the entry-point group instead.
    """
    global _registry
    with _lock:
        pm = plugin_manager()
        pm.register(plugin, name=name)
        from mpr.settings import get_settings

        _registry = _collect(pm, get_settings())


def unregister_plugin(plugin: object) -> None:
    """Remove a plugin registered with :func:`register_plugin` and reload the registry."""
    global _registry
    with _lock:
        pm = plugin_manager()
        pm.unregister(plugin)
        from mpr.settings import get_settings

        _registry = _collect(pm, get_settings())


def missing_plugin_error(kind: str, name: str, available: list[str]) -> PluginError:
    """A PluginError naming the package that provides ``name``, for a selection that is not installed."""
    provider = KNOWN_PROVIDERS.get((kind, name))
    have = ", ".join(sorted(available)) or "none"
    hint = f"; install {provider}" if provider else ""
    what = "executor" if kind == "executor" else "storage backend for scheme"
    return PluginError(f"no {what} {name!r} is installed (installed: {have}){hint}")
