"""The Litestar application: GraphQL, callback, media, admin, health, the browser UIs.

``create_app(settings)`` builds it; its lifespan opens the database on the
app's event loop (and makes that loop the :mod:`mpr.db` portal for worker
threads), syncs plugin presets, runs the poll loop for executors without
callbacks (:mod:`mpr.polling`, every ``MPR_POLL_INTERVAL`` s) and the watch
folder (:mod:`mpr.watch`, every ``MPR_SCAN_INTERVAL`` s), and optionally
starts the embedded local worker and the native gRPC server (what ``mpr
serve`` asks for).

The gRPC-Web routes live in :mod:`mpr.grpc.web` (events engineer). They are
mounted when that module is installed: its ``routes`` list (or a ``route``)
is added to the app; the module's absence is the only thing that is checked.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, get
from litestar.config.csrf import CSRFConfig
from litestar.exceptions import HTTPException
from litestar.response import Response
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.template.config import TemplateConfig

from mpr.errors import AuthError, InvalidTransition, MprError, NotFound, StorageError, ValidationError
from mpr.settings import Settings, get_settings

log = logging.getLogger("mpr.api")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

MISSING_UI = """<!doctype html><html><head><meta charset="utf-8"><title>MPR</title>
<style>body{{font:16px system-ui,sans-serif;max-width:40em;margin:4em auto;color:#222}}code{{background:#eee;padding:2px 4px}}</style>
</head><body><h1>MPR — {what} is not built</h1>
<p>The browser UI has not been built yet. Run <code>make ui</code> (needs Node.js) and reload.</p>
<p>Meanwhile: <a href="/graphql">GraphQL (GraphiQL)</a> · <a href="/admin">admin</a> ·
<a href="/readyz">readiness</a></p></body></html>"""

_STATUS = {NotFound: 404, ValidationError: 400, StorageError: 400, InvalidTransition: 409, AuthError: 401}


def mpr_error_handler(request: Request, exc: MprError) -> Response[dict[str, str]]:
    """MprError → HTTP status with its (user-safe) message, in one place."""
    status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 400)
    return Response({"error": str(exc)}, status_code=status)


def internal_error_handler(request: Request, exc: Exception) -> Response[dict[str, str]]:
    """Anything unexpected: logged with its traceback; the client only sees a request id."""
    if isinstance(exc, HTTPException):
        return Response({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    request_id = uuid.uuid4().hex[:12]
    log.error("internal error (request id %s) on %s %s", request_id, request.method, request.url.path, exc_info=exc)
    return Response({"error": f"internal error (request id {request_id})"}, status_code=HTTP_500_INTERNAL_SERVER_ERROR)


def _ui_routes() -> list[Any]:
    """The built UIs from ``mpr/static`` (``make ui``), or small pages saying how to build them."""
    if (STATIC_DIR / "index.html").is_file():
        return [create_static_files_router(path="/", directories=[STATIC_DIR], html_mode=True, include_in_schema=False)]

    @get("/", include_in_schema=False, media_type="text/html", sync_to_thread=False)
    def timeline_missing() -> str:
        return MISSING_UI.format(what="the Timeline UI")

    @get("/chunker", include_in_schema=False, media_type="text/html", sync_to_thread=False)
    def chunker_missing() -> str:
        return MISSING_UI.format(what="the Chunker UI")

    return [timeline_missing, chunker_missing]


def _grpc_web_routes() -> list[Any]:
    """The gRPC-Web router of :mod:`mpr.grpc.web` (``grpc_web_router``) when that module exists."""
    if importlib.util.find_spec("mpr.grpc.web") is None:
        return []
    module = importlib.import_module("mpr.grpc.web")
    return [module.grpc_web_router]


async def _start_grpc(settings: Settings) -> Any:
    """Start the native gRPC server (``mpr.grpc.server.start``) on this loop; None when disabled or unbindable."""
    if not settings.grpc_port or importlib.util.find_spec("mpr.grpc.server") is None:
        return None
    from mpr.grpc.server import start

    try:
        return await start(settings.grpc_port, settings=settings)
    except MprError as exc:
        log.error("%s; continuing without the native gRPC server (gRPC-Web still works)", exc)
        return None


def _create_media_folders(settings: Settings) -> None:
    """Create missing local MEDIA_IN/MEDIA_OUT folders, so a fresh setup is ready before its first job."""
    from pathlib import Path

    from mpr.storage import scheme_of

    for name, root in (("MEDIA_IN", settings.media_in), ("MEDIA_OUT", settings.media_out)):
        if scheme_of(root) != "file":
            continue
        path = Path(root.removeprefix("file://"))
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("cannot create %s folder %s: %s (see /readyz)", name, path, exc.strerror or exc)


def _lifespan(settings: Settings, *, worker: bool, grpc: bool, loops: bool):
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        from tortoise import Tortoise

        from mpr import db
        from mpr.api.callback import ReplayStore
        from mpr.callbacks import MAX_AGE
        from mpr.plugins import load_plugins

        load_plugins()
        _create_media_folders(settings)
        owns_db = not Tortoise.is_inited()
        if owns_db:
            await db.init_db(settings)
        previous = db._portal
        db.set_portal(db.Portal(asyncio.get_running_loop()))
        app.state.replay_store = ReplayStore.for_settings(settings, MAX_AGE)  # shared: Redis or the var dir
        handles: dict[str, Any] = {}
        try:
            try:
                from mpr.presets import sync_presets
            except ImportError:
                log.warning("mpr.presets.sync_presets is missing; presets not synced")
            else:
                result = await sync_presets()
                log.info("presets synced: %s", result)
            if grpc:
                handles["grpc"] = await _start_grpc(settings)
            if loops:  # temp files of uploads a crash interrupted (in a thread: it walks MEDIA_IN)
                from mpr.upload import remove_stale_uploads

                handles["uploads"] = asyncio.create_task(asyncio.to_thread(remove_stale_uploads, settings))
            if loops and settings.poll_interval:  # one process of several runs the loops (mpr serve --processes)
                from mpr.polling import poll_loop

                handles["poll"] = asyncio.create_task(poll_loop(settings.poll_interval, settings), name="mpr-poll")
            if loops and settings.scan_interval:
                from mpr.watch import scan_loop

                handles["scan"] = asyncio.create_task(scan_loop(settings.scan_interval, settings), name="mpr-scan")
            yield
        finally:
            if handles.get("poll") is not None:
                handles["poll"].cancel()
                await asyncio.gather(handles["poll"], return_exceptions=True)
            if handles.get("scan") is not None:  # a pass in progress stops at its next await
                handles["scan"].cancel()
                await asyncio.gather(handles["scan"], return_exceptions=True)
            for cleanup in reversed(app.state.before_db_close):  # plugins' (e.g. the embedded worker)
                try:
                    await cleanup()
                except Exception:
                    log.exception("shutdown step %r failed", cleanup)
            if handles.get("grpc") is not None:
                await handles["grpc"].stop(0.5)
            await app.state.replay_store.close()
            db.set_portal(previous)
            if owns_db:
                await db.close_db()

    return lifespan


def create_app(
    settings: Settings | None = None, *, worker: bool = False, grpc: bool = False, loops: bool = True
) -> Litestar:
    """Build the MPR web app. ``worker``/``grpc`` start the embedded local worker / native gRPC server,
    ``loops`` the poll loop and the watch-folder scan (off in all but one of ``mpr serve --processes N``)."""
    from mpr.api import admin, callback, health, media, upload
    from mpr.api.graphql import make_graphql_controller

    settings = settings or get_settings()
    route_handlers: list[Any] = [
        make_graphql_controller(lambda: settings),
        *callback.routes,
        *media.routes,
        *upload.routes,
        *health.routes,
        *admin.routes,
        *_grpc_web_routes(),
        *_ui_routes(),
    ]
    app = Litestar(
        route_handlers=route_handlers,
        lifespan=[_lifespan(settings, worker=worker, grpc=grpc, loops=loops)],
        exception_handlers={MprError: mpr_error_handler, Exception: internal_error_handler},
        template_config=TemplateConfig(directory=TEMPLATES_DIR, engine=_jinja_engine()),
        # CSRF protects the admin's cookie-authenticated forms; every other route uses tokens or signatures.
        csrf_config=CSRFConfig(
            secret=admin.csrf_secret(settings.admin_password),  # the same in every API process
            cookie_name="mpr_csrf",
            cookie_httponly=True,
            cookie_secure=settings.public_url.startswith("https://"),
            cookie_path="/admin",
            exclude=[r"^/graphql", r"^/api/", r"^/grpc/", r"^/media/", r"^/healthz", r"^/readyz"],
        ),
        openapi_config=None,
        debug=False,
    )
    app.state.settings = settings
    app.state.admin = admin.AdminAuth(settings.admin_password)
    # Plugins hook into the app here: mpr_local starts its embedded worker when
    # ``embed_worker`` is set (``mpr serve`` without --no-worker).
    app.state.embed_worker = worker
    app.state.before_db_close = []
    from mpr.plugins import plugin_manager

    plugin_manager().hook.startup(app=app)
    return app


def _jinja_engine() -> type:
    from litestar.plugins.jinja import JinjaTemplateEngine

    return JinjaTemplateEngine
