"""Built-in plugin: outgoing job notifications (``MPR_NOTIFY_URL``), see :mod:`mpr.notify`."""

from __future__ import annotations

import asyncio

from mpr import hookimpl


@hookimpl
def register_event_sinks(register, settings):
    if settings.notify_urls:
        from mpr.notify import Notifier, log

        if not settings.notify_secret:
            log.warning("MPR_NOTIFY_URL is set without MPR_NOTIFY_SECRET: job notifications are sent unsigned")
        register(Notifier.from_settings(settings))


@hookimpl(tryfirst=True)  # called first, so its shutdown step runs last: after the embedded worker stopped
def startup(app):
    if not app.state.settings.notify_urls:
        return

    async def flush_notifications() -> None:
        # each API process (mpr serve --processes N) sends what its own transitions queued
        from mpr.notify import flush_all

        await asyncio.to_thread(flush_all)

    app.state.before_db_close.append(flush_notifications)
