"""Server-rendered admin views at ``/admin`` (Jinja templates in ``mpr/api/templates/admin``).

Login uses ``MPR_ADMIN_PASSWORD``, kept only as a salted scrypt hash in
memory. When the variable is unset the admin is **disabled**: every page
says so and how to enable it (no password is ever generated or printed).
Sessions are opaque random tokens (an ``HttpOnly``, ``SameSite=Lax``
cookie, ``Secure`` when MPR_PUBLIC_URL is https) kept with a 12 h TTL in a
Litestar store shared by every API process and surviving restarts: Redis
when MPR_REDIS_URL is set, else files under ``$MPR_VAR_DIR/admin-sessions``.
Forms carry Litestar's CSRF token (its secret derived from the password, so
any process accepts them); failed logins are rate limited per client address
through the same store, each failure recorded atomically (a Redis MULTI/EXEC,
or an ``flock`` of the store's directory) so simultaneous processes lose none.

Pages: status (queue depth, workers seen, executor, storage roots, ffmpeg and
plugin versions), assets (edit comments), presets (create/edit), jobs
(cancel/retry) and chunks, each list with filters and search. Writes go
through :mod:`mpr.service`, like the GraphQL mutations.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect, Response, Template
from litestar.stores.base import StorageObject, Store
from litestar.stores.file import FileStore
from litestar.stores.redis import RedisStore
from tortoise.expressions import Q

import mpr
from mpr.api.deps import app_settings, client_ip
from mpr.errors import MprError
from mpr.models import (
    AssetKind,
    AssetStatus,
    ChunkStatus,
    JobChunk,
    JobStatus,
    MediaAsset,
    TranscodeJob,
    TranscodePreset,
)
from mpr.settings import Settings
from mpr.stats import job_statistics

log = logging.getLogger("mpr.api.admin")

FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]

T = TypeVar("T")

SESSION_COOKIE = "mpr_admin"
STORE_NAMESPACE = "mpr:admin"
SESSION_TTL = 12 * 3600
LOGIN_WINDOW = 300.0
LOGIN_MAX_FAILURES = 5
PAGE_SIZE = 50

PRESET_FIELDS = (
    ("name", str),
    ("description", str),
    ("container", str),
    ("video_codec", str),
    ("video_bitrate", str),
    ("crf", int),
    ("speed_preset", str),
    ("width", int),
    ("height", int),
    ("fps", float),
    ("audio_codec", str),
    ("audio_bitrate", str),
    ("sample_rate", int),
    ("channels", int),
)


class SessionStoreDown(MprError):
    """The session store (Redis or the var directory) cannot be read or written."""


def _recent(raw: bytes | None, now: float) -> list[float]:
    """The failure times in a stored JSON list that are still within LOGIN_WINDOW of ``now``."""
    try:
        times = [float(t) for t in json.loads(raw or b"[]")]
    except (ValueError, TypeError):
        times = []
    return [t for t in times if now - t < LOGIN_WINDOW]


class AdminRedisStore(RedisStore):
    """RedisStore that also counts login failures atomically: a sorted set of failure times per address."""

    def _failures_key(self, ip: str) -> str:
        # not "login-failures:": that name held a JSON string before, and ZADD on it would fail
        return self._make_key(f"login-failure-times:{ip}")

    async def count_failures(self, ip: str, now: float) -> int:
        """Failures of ``ip`` within LOGIN_WINDOW of ``now``."""
        return await self._redis.zcount(self._failures_key(ip), f"({now - LOGIN_WINDOW}", "+inf")

    async def add_failure(self, ip: str, now: float) -> None:
        """Record a failure of ``ip`` at ``now`` in one MULTI/EXEC, so concurrent processes never lose one."""
        key = self._failures_key(ip)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {f"{now!r}:{secrets.token_hex(8)}": now})
            pipe.zremrangebyscore(key, "-inf", now - LOGIN_WINDOW)
            pipe.zremrangebyrank(key, 0, -LOGIN_MAX_FAILURES * 4 - 1)  # keep the newest, as the file store does
            pipe.expire(key, int(LOGIN_WINDOW) + 1)
            await pipe.execute()


class AdminFileStore(FileStore):
    """FileStore whose login-failure read-modify-write holds an ``flock`` of the store's directory.

    The lock is on the directory itself, not on a file in it: ``delete_expired``
    reads every file there as a stored value.
    """

    async def count_failures(self, ip: str, now: float) -> int:
        """Failures of ``ip`` within LOGIN_WINDOW of ``now`` (values are replaced by rename: no lock to read)."""
        return len(_recent(await self.get(f"login-failures:{ip}"), now))

    async def add_failure(self, ip: str, now: float) -> None:
        """Record a failure of ``ip`` at ``now``; concurrent processes take turns on the lock."""
        await asyncio.to_thread(self._add_failure_sync, f"login-failures:{ip}", now)

    def _add_failure_sync(self, key: str, now: float) -> None:
        target = self._path_from_key(key)
        directory = os.open(str(self.path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(directory, fcntl.LOCK_EX)  # released when the descriptor is closed
            try:
                with open(str(target), "rb") as f:
                    stored: StorageObject | None = StorageObject.from_bytes(f.read())
            except FileNotFoundError:
                stored = None
            raw = stored.data if stored is not None and not stored.expired else None
            recent = [*_recent(raw, now), now][-LOGIN_MAX_FAILURES * 4 :]
            value = StorageObject.new(data=json.dumps(recent).encode(), expires_in=int(LOGIN_WINDOW) + 1)
            self._write_sync(target, value)
        finally:
            os.close(directory)


def session_store(settings: Settings) -> Store:
    """Where admin sessions and login failures live: Redis when MPR_REDIS_URL is set, else files in the var dir.

    Both are shared by every API process using the same Redis or var directory,
    and survive a restart.
    """
    if settings.redis_url:
        return AdminRedisStore.with_client(url=settings.redis_url, namespace=STORE_NAMESPACE)
    path = settings.var_path / "admin-sessions"
    path.mkdir(mode=0o700, exist_ok=True)
    return AdminFileStore(path)


@functools.lru_cache(maxsize=4)
def _master_key(password: str) -> bytes:
    """A key derived from MPR_ADMIN_PASSWORD, the same in every process (for session ids and CSRF)."""
    return hashlib.scrypt(password.encode(), salt=b"mpr-admin-keys/v1", n=2**14, r=8, p=1, dklen=32)


def csrf_secret(password: str | None) -> str:
    """The CSRF secret: derived from MPR_ADMIN_PASSWORD so every API process accepts the others' forms.

    Random when the admin is disabled (no form is ever rendered then).
    """
    if not password:
        return secrets.token_urlsafe(32)
    return hmac.new(_master_key(password), b"csrf", hashlib.sha256).hexdigest()


class AdminAuth:
    """Password check (scrypt hash in memory), sessions, and the login rate limit.

    Sessions and failure counts are kept in a Litestar store (:func:`session_store`)
    shared by all API processes. The cookie holds an opaque random token; the
    store key is an HMAC of it under a key derived from the password, so the
    store never holds a usable token, and changing MPR_ADMIN_PASSWORD ends every
    session. Logout deletes the entry, which ends the session in every process.
    """

    def __init__(self, password: str | None, store: Store | None = None) -> None:
        self.enabled = bool(password)
        self._salt = secrets.token_bytes(16)
        self._hash = self._derive(password) if password else b""
        self._key = hmac.new(_master_key(password), b"sessions", hashlib.sha256).digest() if password else b""
        self.store = store
        self.settings: Settings | None = None  # where the store is opened from on first use
        self._lock = asyncio.Lock()
        self._swept = 0.0

    def _derive(self, password: str) -> bytes:
        return hashlib.scrypt(password.encode(), salt=self._salt, n=2**14, r=8, p=1, dklen=32)

    def check_password(self, password: str) -> bool:
        """True when ``password`` matches MPR_ADMIN_PASSWORD (constant-time)."""
        return self.enabled and hmac.compare_digest(self._derive(password or ""), self._hash)

    def _session_key(self, token: str) -> str:
        return "session:" + hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()

    def _store(self) -> Store:
        if self.store is None:
            if self.settings is None:
                raise SessionStoreDown("the admin session store is not set up")
            try:
                self.store = session_store(self.settings)
            except OSError as exc:
                log.error("cannot open the admin session store: %s", exc)
                raise SessionStoreDown(f"the admin session store is unavailable ({exc.strerror or exc})") from exc
        return self.store

    async def _call(self, what: str, action: Awaitable[T]) -> T:
        try:
            return await action
        except Exception as exc:  # Redis down, var dir unreadable: one clear answer instead of a 500
            log.error("admin session store failed to %s: %s", what, exc)
            raise SessionStoreDown(f"the admin session store is unavailable ({type(exc).__name__})") from exc

    async def blocked(self, ip: str) -> bool:
        """True when ``ip`` had LOGIN_MAX_FAILURES failed logins within the window."""
        return await self.failures(ip) >= LOGIN_MAX_FAILURES

    async def failures(self, ip: str) -> int:
        """How many failed logins of ``ip`` are within the window (at most LOGIN_MAX_FAILURES × 4 are kept)."""
        store = self._store()
        if isinstance(store, AdminRedisStore | AdminFileStore):
            return await self._call("read", store.count_failures(ip, time.time()))
        raw = await self._call("read", store.get(f"login-failures:{ip}"))
        return len(_recent(raw, time.time()))

    async def failed(self, ip: str) -> None:
        """Count a failed login of ``ip`` (kept LOGIN_WINDOW seconds), atomically across processes.

        Redis: one MULTI/EXEC; files: under an flock; any other store (tests) only
        serialises this process.
        """
        store = self._store()
        if isinstance(store, AdminRedisStore | AdminFileStore):
            await self._call("write", store.add_failure(ip, time.time()))
            return
        async with self._lock:
            raw = await self._call("read", store.get(f"login-failures:{ip}"))
            recent = [*_recent(raw, time.time()), time.time()][-LOGIN_MAX_FAILURES * 4 :]
            await self._call("write", store.set(f"login-failures:{ip}", json.dumps(recent), int(LOGIN_WINDOW) + 1))

    async def new_session(self) -> str:
        """A new session token (the cookie value), stored for SESSION_TTL seconds."""
        token = secrets.token_urlsafe(32)
        key = self._session_key(token)
        store = self._store()
        await self._call("write", store.set(key, json.dumps({"created": time.time()}), SESSION_TTL))
        if not await self._call("read", store.exists(key)):  # FileStore ignores write errors
            raise SessionStoreDown("the admin session store is not writable")
        await self._sweep()
        return token

    async def valid(self, token: str | None) -> bool:
        """True when ``token`` names a live session (expired, ended or forged tokens are not)."""
        if not self.enabled or not token or len(token) > 256:
            return False
        return await self._call("read", self._store().get(self._session_key(token))) is not None

    async def end(self, token: str | None) -> None:
        """Delete the session of ``token`` from the store (every process sees it gone)."""
        if self.enabled and token and len(token) <= 256:
            await self._call("write", self._store().delete(self._session_key(token)))

    async def _sweep(self) -> None:
        """Drop expired session files now and then (Redis expires keys itself)."""
        delete_expired = getattr(self.store, "delete_expired", None)
        if delete_expired is None or time.monotonic() - self._swept < 3600:
            return
        self._swept = time.monotonic()
        try:
            await delete_expired()
        except OSError as exc:
            log.warning("could not sweep expired admin sessions: %s", exc)

    async def close(self) -> None:
        """Release the store's connections (Redis)."""
        shutdown = getattr(self.store, "_shutdown", None)
        if shutdown is not None:
            await shutdown()


def _auth(request: Request) -> AdminAuth:
    """The app's AdminAuth, told the app's settings on first use (its store is closed with the app)."""
    auth: AdminAuth = request.app.state.admin
    if auth.settings is None and auth.store is None and auth.enabled:
        auth.settings = app_settings(request)
        request.app.state.before_db_close.append(auth.close)
    return auth


def _unavailable(exc: SessionStoreDown) -> Response[str]:
    return Response(f"{exc}\n", status_code=503, media_type="text/plain")


async def _logged_in(request: Request) -> bool:
    return await _auth(request).valid(request.cookies.get(SESSION_COOKIE))


async def _gate(request: Request) -> Response[Any] | None:
    """A response to send instead of the page (admin disabled, or login needed); None to go on."""
    if not _auth(request).enabled:
        return Template("admin/disabled.html", context={}, status_code=403)
    try:
        logged_in = await _logged_in(request)
    except SessionStoreDown as exc:
        return _unavailable(exc)
    if not logged_in:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return Redirect(f"/admin/login?next={urllib.parse.quote(target)}", status_code=303)
    return None


def _page(request: Request, template: str, **context: Any) -> Template:
    context.setdefault("msg", request.query_params.get("msg", ""))
    context.setdefault("err", request.query_params.get("err", ""))
    context["nav"] = template.split("/")[-1].split(".")[0]
    context["page_query"] = urllib.parse.urlencode({k: v for k, v in request.query_params.items() if k != "page"})
    from mpr.api.graphql import media_url  # signed links: /media needs the API token when one is set

    context["media_url"] = media_url
    return Template(f"admin/{template}", context=context)


def _back(path: str, *, msg: str = "", err: str = "") -> Redirect:
    query = urllib.parse.urlencode({k: v for k, v in (("msg", msg), ("err", err)) if v})
    return Redirect(path + (f"?{query}" if query else ""), status_code=303)


async def _act(action: Awaitable[Any], *, back: str, done: str | None = None, msg: str) -> Redirect:
    """Run a service call from a form; redirect to ``done`` with ``msg``, or back with its error."""
    try:
        await action
    except MprError as exc:
        return _back(back, err=str(exc))
    return _back(done or back, msg=msg)


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _offset(request: Request) -> int:
    try:
        return max(0, int(request.query_params.get("page", "1")) - 1) * PAGE_SIZE
    except ValueError:
        return 0


def _service() -> Any:
    from mpr import service

    return service


@functools.lru_cache(maxsize=4)
def _ffmpeg_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "-version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc})"
    return out.splitlines()[0] if out else "unknown"


def _plugins() -> list[dict[str, str]]:
    from importlib import metadata

    from mpr.plugins import load_plugins

    registry = load_plugins()
    owners: dict[str, list[str]] = {}
    for (kind, name), owner in registry.owners.items():
        owners.setdefault(owner, []).append(f"{kind} {name}")
    rows = []
    for owner, things in sorted(owners.items()):
        dist = owner.split(".")[0].replace("_", "-")
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = mpr.__version__ if owner.startswith("mpr") else "?"
        rows.append({"name": owner, "version": version, "registers": ", ".join(sorted(things))})
    return rows


def _preset_data(form: dict[str, str], *, partial: bool) -> dict[str, Any]:
    """Form fields as preset values: blank → None (codecs: 'none' keeps meaning "drop the stream")."""
    data: dict[str, Any] = {}
    for name, kind in PRESET_FIELDS:
        if name not in form:
            continue
        raw = (form.get(name) or "").strip()
        if raw == "":
            data[name] = "" if name == "description" else None
            continue
        try:
            data[name] = kind(raw)
        except ValueError:
            what = "whole number" if kind is int else "number"
            raise _FormError(f"{name.replace('_', ' ')} must be a {what}, got {raw!r}") from None
    if not partial:
        data.setdefault("name", "")
    return data


class _FormError(MprError):
    pass


class AdminController(Controller):
    """Everything under ``/admin``."""

    path = "/admin"
    include_in_schema = False

    # -- login --------------------------------------------------------------------------------

    @get("/login")
    async def login_form(self, request: Request) -> Response[Any]:
        if not _auth(request).enabled:
            return Template("admin/disabled.html", context={}, status_code=403)
        return Template("admin/login.html", context={"next": request.query_params.get("next", "/admin"), "error": ""})

    @post("/login")
    async def login(self, request: Request, data: FormData) -> Response[Any]:
        auth = _auth(request)
        if not auth.enabled:
            return Template("admin/disabled.html", context={}, status_code=403)
        ip = client_ip(request)
        nxt = data.get("next") or "/admin"
        if not nxt.startswith("/admin"):
            nxt = "/admin"  # never redirect off-site after login
        try:
            if await auth.blocked(ip):
                return Template(
                    "admin/login.html",
                    context={"next": nxt, "error": "Too many failed logins. Wait a few minutes and try again."},
                    status_code=429,
                )
            if not auth.check_password(data.get("password", "")):
                await auth.failed(ip)
                log.warning("failed admin login from %s", ip)
                return Template("admin/login.html", context={"next": nxt, "error": "Wrong password."}, status_code=401)
            token = await auth.new_session()
        except SessionStoreDown as exc:
            return _unavailable(exc)
        response = Redirect(nxt, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            path="/admin",
            httponly=True,
            samesite="lax",
            secure=app_settings(request).public_url.startswith("https://") or request.url.scheme == "https",
            max_age=SESSION_TTL,
        )
        return response

    @post("/logout")
    async def logout(self, request: Request) -> Response[Any]:
        try:
            await _auth(request).end(request.cookies.get(SESSION_COOKIE))
        except SessionStoreDown as exc:
            return _unavailable(exc)  # the session may still be live: do not pretend it ended
        response = Redirect("/admin/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/admin")
        return response

    # -- status -------------------------------------------------------------------------------

    @get("/")
    async def status(self, request: Request) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        from mpr.api.health import run_checks

        settings = app_settings(request)
        checks = await run_checks(settings)
        stats = await job_statistics()  # COUNT ... GROUP BY status and the SUMs of the completed jobs
        counts = stats.jobs_by_status
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=settings.heartbeat_timeout)
        workers = sorted(
            set(
                await TranscodeJob.filter(heartbeat_at__gte=since, worker__isnull=False).values_list(
                    "worker", flat=True
                )
            )
        )
        return _page(
            request,
            "status.html",
            checks=checks,
            counts=counts,
            workers=workers,
            settings=settings,
            version=mpr.__version__,
            ffmpeg=_ffmpeg_version(settings.ffmpeg),
            plugins=_plugins(),
            assets=await MediaAsset.all().count(),
            presets=await TranscodePreset.all().count(),
            stats=stats,
        )

    # -- assets -------------------------------------------------------------------------------

    @get("/assets")
    async def assets(self, request: Request) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        q = request.query_params
        qs = MediaAsset.all()
        if q.get("status") in {s.value for s in AssetStatus}:
            qs = qs.filter(status=q["status"])
        if q.get("kind") in {k.value for k in AssetKind}:
            qs = qs.filter(kind=q["kind"])
        if q.get("q"):
            qs = qs.filter(Q(path__icontains=q["q"]) | Q(comments__icontains=q["q"]))
        total = await qs.count()
        rows = await qs.order_by("path").offset(_offset(request)).limit(PAGE_SIZE)
        return _page(request, "assets.html", rows=rows, total=total, q=q, statuses=AssetStatus, kinds=AssetKind)

    @get("/assets/{asset_id:str}")
    async def asset(self, request: Request, asset_id: FromPath[str]) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        aid = _uuid(asset_id)
        row = await MediaAsset.get_or_none(id=aid) if aid else None
        if row is None:
            return _back("/admin/assets", err=f"asset {asset_id} does not exist")
        jobs = await TranscodeJob.filter(source_asset_id=aid).order_by("-created_at").limit(100)
        return _page(request, "asset.html", asset=row, jobs=jobs)

    @post("/assets/{asset_id:str}")
    async def asset_save(self, request: Request, asset_id: FromPath[str], data: FormData) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        return await _act(
            _service().update_asset(asset_id, data.get("comments", "")),
            back=f"/admin/assets/{asset_id}",
            msg="Comments saved.",
        )

    # -- presets ------------------------------------------------------------------------------

    @get("/presets")
    async def presets(self, request: Request) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        q = request.query_params
        qs = TranscodePreset.all()
        if q.get("source"):
            qs = qs.filter(source=q["source"])
        if q.get("q"):
            qs = qs.filter(Q(name__icontains=q["q"]) | Q(description__icontains=q["q"]))
        rows = await qs.order_by("name")
        sources = sorted(set(await TranscodePreset.all().values_list("source", flat=True)))
        return _page(request, "presets.html", rows=rows, q=q, sources=sources)

    @get("/presets/new")
    async def preset_new(self, request: Request) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        return _page(request, "preset.html", preset=None, values={}, fields=PRESET_FIELDS)

    @post("/presets/new")
    async def preset_create(self, request: Request, data: FormData) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        try:
            preset = await _service().create_preset(_preset_data(data, partial=False))
        except MprError as exc:
            return _page(request, "preset.html", preset=None, values=data, fields=PRESET_FIELDS, err=str(exc))
        return _back(f"/admin/presets/{preset.id}", msg="Preset created.")

    @get("/presets/{preset_id:str}")
    async def preset(self, request: Request, preset_id: FromPath[str]) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        pid = _uuid(preset_id)
        row = await TranscodePreset.get_or_none(id=pid) if pid else None
        if row is None:
            return _back("/admin/presets", err=f"preset {preset_id} does not exist")
        values = {name: getattr(row, name) for name, _ in PRESET_FIELDS}
        return _page(request, "preset.html", preset=row, values=values, fields=PRESET_FIELDS)

    @post("/presets/{preset_id:str}")
    async def preset_save(self, request: Request, preset_id: FromPath[str], data: FormData) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        pid = _uuid(preset_id)
        row = await TranscodePreset.get_or_none(id=pid) if pid else None
        if row is None:
            return _back("/admin/presets", err=f"preset {preset_id} does not exist")
        try:
            await _service().update_preset(pid, _preset_data(data, partial=True))
        except MprError as exc:
            return _page(request, "preset.html", preset=row, values=data, fields=PRESET_FIELDS, err=str(exc))
        return _back(f"/admin/presets/{preset_id}", msg="Preset saved.")

    @post("/presets/{preset_id:str}/delete")
    async def preset_delete(self, request: Request, preset_id: FromPath[str]) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        return await _act(
            _service().delete_preset(preset_id),
            back=f"/admin/presets/{preset_id}",
            done="/admin/presets",
            msg="Preset deleted.",
        )

    @post("/presets/{preset_id:str}/reset")
    async def preset_reset(self, request: Request, preset_id: FromPath[str]) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        return await _act(
            _service().reset_preset(preset_id), back=f"/admin/presets/{preset_id}", msg="Preset reset to defaults."
        )

    # -- jobs ---------------------------------------------------------------------------------

    @get("/jobs")
    async def jobs(self, request: Request) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        q = request.query_params
        qs = TranscodeJob.all()
        if q.get("status") in {s.value for s in JobStatus}:
            qs = qs.filter(status=q["status"])
        if q.get("executor"):
            qs = qs.filter(executor=q["executor"])
        if q.get("q"):
            qs = qs.filter(Q(output_path__icontains=q["q"]) | Q(source_path__icontains=q["q"]))
        total = await qs.count()
        rows = await qs.order_by("-created_at").offset(_offset(request)).limit(PAGE_SIZE)
        executors = sorted(
            set(await TranscodeJob.all().order_by("executor").distinct().values_list("executor", flat=True))
        )
        return _page(request, "jobs.html", rows=rows, total=total, q=q, statuses=JobStatus, executors=executors)

    @get("/jobs/{job_id:str}")
    async def job(self, request: Request, job_id: FromPath[str]) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        jid = _uuid(job_id)
        row = await TranscodeJob.get_or_none(id=jid) if jid else None
        if row is None:
            return _back("/admin/jobs", err=f"job {job_id} does not exist")
        chunks = await JobChunk.filter(job_id=jid).order_by("index")
        metrics = "" if row.metrics is None else json.dumps(row.metrics, indent=2, sort_keys=True, ensure_ascii=False)
        return _page(request, "job.html", job=row, chunks=chunks, metrics=metrics)

    @post("/jobs/{job_id:str}/cancel")
    async def job_cancel(self, request: Request, job_id: FromPath[str]) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        return await _act(_service().cancel_job(job_id), back=f"/admin/jobs/{job_id}", msg="Job cancelled.")

    @post("/jobs/{job_id:str}/retry")
    async def job_retry(self, request: Request, job_id: FromPath[str]) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        return await _act(_service().retry_job(job_id), back=f"/admin/jobs/{job_id}", msg="Job queued again.")

    @post("/jobs/{job_id:str}/delete")
    async def job_delete(self, request: Request, job_id: FromPath[str], data: FormData) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        output = data.get("delete_output") == "1"
        return await _act(
            _service().delete_job(job_id, delete_output=output),
            back=f"/admin/jobs/{job_id}",
            done="/admin/jobs",
            msg="Job and its output deleted." if output else "Job deleted (its output file is kept).",
        )

    # -- chunks -------------------------------------------------------------------------------

    @get("/chunks")
    async def chunks(self, request: Request) -> Response[Any]:
        if (gate := await _gate(request)) is not None:
            return gate
        q = request.query_params
        qs = JobChunk.all()
        if q.get("status") in {s.value for s in ChunkStatus}:
            qs = qs.filter(status=q["status"])
        if q.get("job") and (jid := _uuid(q["job"])):
            qs = qs.filter(job_id=jid)
        if q.get("q"):
            qs = qs.filter(Q(worker__icontains=q["q"]) | Q(output_key__icontains=q["q"]) | Q(error__icontains=q["q"]))
        total = await qs.count()
        rows = await qs.order_by("-id").offset(_offset(request)).limit(PAGE_SIZE)
        return _page(request, "chunks.html", rows=rows, total=total, q=q, statuses=ChunkStatus)


routes = [AdminController]
