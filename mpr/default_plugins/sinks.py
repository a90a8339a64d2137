"""Built-in plugin: the log sink, the in-process bus, and Redis Streams when MPR_REDIS_URL is set."""

from __future__ import annotations

from mpr import hookimpl


@hookimpl
def register_event_sinks(register, settings):
    from mpr.bus import get_bus, LogSink

    register(LogSink())
    register(get_bus(settings))
