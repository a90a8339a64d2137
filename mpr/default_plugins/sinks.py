"""Built-in plugin: the log sink, and the event bus (Redis Streams when MPR_REDIS_URL is set, else in-process)."""

from __future__ import annotations

from mpr import hookimpl


@hookimpl
def register_event_sinks(register, settings):
    from mpr.bus import LogSink, get_bus

    register(LogSink())
    # get_bus picks RedisStreamsBus for settings.redis_url, InProcessBus otherwise: exactly one store
    register(get_bus(settings))
