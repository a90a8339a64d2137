"""The ``startup(app)`` hook: plugins add routes, start-up and shutdown work to the web app."""

from __future__ import annotations

import pytest
from litestar import get

from mpr import hookimpl


class RoutePlugin:
    """A third-party plugin that adds a route and start/stop work through the startup hook."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def startup(self, app):
        calls = self.calls

        @get("/api/hello-plugin", sync_to_thread=False)
        def hello() -> dict[str, str]:
            return {"hello": "plugin"}

        async def started() -> None:
            from mpr.models import TranscodePreset

            calls.append(f"started:{await TranscodePreset.all().count() > 0}")

        async def stopping() -> None:
            from mpr.models import TranscodePreset

            # still before the database closes
            calls.append(f"stopping:{await TranscodePreset.all().count() > 0}")

        app.register(hello)
        app.on_startup.append(started)
        app.state.before_db_close.append(stopping)
        calls.append("startup-hook")


@pytest.fixture
def route_plugin(db, media):
    """Registered after ``media`` has reset the plugin registry."""
    from mpr.plugins import register_plugin, unregister_plugin

    plugin = RoutePlugin()
    register_plugin(plugin, name="route-plugin")
    try:
        yield plugin
    finally:
        unregister_plugin(plugin)


async def test_startup_hook_adds_routes_and_lifecycle_work(route_plugin, start_api):
    api = await start_api()
    assert route_plugin.calls == ["startup-hook", "started:True"]
    r = await api.http.get("/api/hello-plugin")
    assert r.json() == {"hello": "plugin"}


async def test_shutdown_work_runs_while_the_database_is_open(route_plugin):
    from litestar.testing import AsyncTestClient

    from mpr.api.app import create_app
    from mpr.settings import get_settings

    app = create_app(get_settings(), worker=False, grpc=False)
    async with AsyncTestClient(app) as client:
        assert (await client.get("/api/hello-plugin")).json() == {"hello": "plugin"}
    assert route_plugin.calls == ["startup-hook", "started:True", "stopping:True"]


async def test_local_plugin_embeds_its_worker_only_when_asked(db, media):
    from litestar.testing import AsyncTestClient

    from mpr.api.app import create_app
    from mpr.settings import get_settings

    for wanted in (False, True):
        app = create_app(get_settings(), worker=wanted, grpc=False)
        assert len(app.state.before_db_close) == int(wanted)
        async with AsyncTestClient(app):
            pass
