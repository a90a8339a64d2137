"""Server-rendered admin views at ``/admin`` (Jinja templates in ``mpr/api/templates/admin``).

Login uses ``MPR_ADMIN_PASSWORD``, kept only as a salted scrypt hash in
memory. When the variable is unset the admin is **disabled**: every page
says so and how to enable it (no password is ever generated or printed).
Sessions are random tokens in memory (an ``HttpOnly``, ``SameSite=Lax``
cookie, ``Secure`` when MPR_PUBLIC_URL is https); forms carry Litestar's CSRF
token; failed logins are rate limited per client address.

Pages: status (queue depth, workers seen, executor, storage roots, ffmpeg and
plugin versions), assets (edit comments), presets (create/edit), jobs
(cancel/retry) and chunks, each list with filters and search. Writes go
through :mod:`mpr.service`, like the GraphQL mutations.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import logging
import secrets
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Awaitable
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Response, Template
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

log = logging.getLogger("mpr.api.admin")

FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]

SESSION_COOKIE = "mpr_admin"
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


class AdminAuth:
    """Password check (scrypt hash in memory), sessions, and the login rate limit."""

    def __init__(self, password: str | None) -> None:
        self.enabled = bool(password)
        self._salt = secrets.token_bytes(16)
        self._hash = self._derive(password) if password else b""
        self._sessions: dict[str, float] = {}
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _derive(self, password: str) -> bytes:
        return hashlib.scrypt(password.encode(), salt=self._salt, n=2**14, r=8, p=1, dklen=32)

    def check_password(self, password: str) -> bool:
        """True when ``password`` matches MPR_ADMIN_PASSWORD (constant-time)."""
        return self.enabled and hmac.compare_digest(self._derive(password or ""), self._hash)

    def blocked(self, ip: str) -> bool:
        """True when ``ip`` had too many failed logins within the window."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(ip, []) if now - t < LOGIN_WINDOW]
            self._failures[ip] = recent
            return len(recent) >= LOGIN_MAX_FAILURES

    def failed(self, ip: str) -> None:
        with self._lock:
            self._failures.setdefault(ip, []).append(time.monotonic())

    def new_session(self) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[token] = time.time() + SESSION_TTL
        return token

    def valid(self, token: str | None) -> bool:
        if not self.enabled or not token:
            return False
        with self._lock:
            expiry = self._sessions.get(token)
            if expiry is None or expiry < time.time():
                self._sessions.pop(token, None)
                return False
            return True

    def end(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)


def _auth(request: Request) -> AdminAuth:
    return request.app.state.admin


def _logged_in(request: Request) -> bool:
    return _auth(request).valid(request.cookies.get(SESSION_COOKIE))


def _gate(request: Request) -> Response[Any] | None:
    """A response to send instead of the page (admin disabled, or login needed); None to go on."""
    if not _auth(request).enabled:
        return Template("admin/disabled.html", context={}, status_code=403)
    if not _logged_in(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return Redirect(f"/admin/login?next={urllib.parse.quote(target)}", status_code=303)
    return None


def _page(request: Request, template: str, **context: Any) -> Template:
    context.setdefault("msg", request.query_params.get("msg", ""))
    context.setdefault("err", request.query_params.get("err", ""))
    context["nav"] = template.split("/")[-1].split(".")[0]
    context["page_query"] = urllib.parse.urlencode({k: v for k, v in request.query_params.items() if k != "page"})
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
        if auth.blocked(ip):
            return Template(
                "admin/login.html",
                context={"next": nxt, "error": "Too many failed logins. Wait a few minutes and try again."},
                status_code=429,
            )
        if not auth.check_password(data.get("password", "")):
            auth.failed(ip)
            log.warning("failed admin login from %s", ip)
            return Template("admin/login.html", context={"next": nxt, "error": "Wrong password."}, status_code=401)
        response = Redirect(nxt, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            auth.new_session(),
            path="/admin",
            httponly=True,
            samesite="lax",
            secure=app_settings(request).public_url.startswith("https://") or request.url.scheme == "https",
            max_age=SESSION_TTL,
        )
        return response

    @post("/logout")
    async def logout(self, request: Request) -> Response[Any]:
        _auth(request).end(request.cookies.get(SESSION_COOKIE))
        response = Redirect("/admin/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/admin")
        return response

    # -- status -------------------------------------------------------------------------------

    @get("/")
    async def status(self, request: Request) -> Response[Any]:
        if (gate := _gate(request)) is not None:
            return gate
        from mpr.api.health import run_checks

        settings = app_settings(request)
        checks = await run_checks(settings)
        counts = {s.value: await TranscodeJob.filter(status=s).count() for s in JobStatus}
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
        )

    # -- assets -------------------------------------------------------------------------------

    @get("/assets")
    async def assets(self, request: Request) -> Response[Any]:
        if (gate := _gate(request)) is not None:
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
    async def asset(self, request: Request, asset_id: str) -> Response[Any]:
        if (gate := _gate(request)) is not None:
            return gate
        aid = _uuid(asset_id)
        row = await MediaAsset.get_or_none(id=aid) if aid else None
        if row is None:
            return _back("/admin/assets", err=f"asset {asset_id} does not exist")
        jobs = await TranscodeJob.filter(source_asset_id=aid).order_by("-created_at").limit(100)
        return _page(request, "asset.html", asset=row, jobs=jobs)

    @post("/assets/{asset_id:str}")
    async def asset_save(self, request: Request, asset_id: str, data: FormData) -> Response[Any]:
        if (gate := _gate(request)) is not None:
            return gate
        return await _act(
            _service().update_asset(asset_id, data.get("comments", "")),
            back=f"/admin/assets/{asset_id}",
            msg="Comments saved.",
        )

    # -- presets ------------------------------------------------------------------------------

    @get("/presets")
    async def presets(self, request: Request) -> Response[Any]:
        if (gate := _gate(request)) is not None:
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
        if (gate := _gate(request)) is not None:
            return gate
        return _page(request, "preset.html", preset=None, values={}, fields=PRESET_FIELDS)

    @post("/presets/new")
    async def preset_create(self, request: Request, data: FormData) -> Response[Any]:
        if (gate := _gate(request)) is not None:
            return gate
        try:
            preset = await _service().create_preset(_preset_data(data, partial=False))
        except MprError as exc:
            return _page(request, "preset.html", preset=None, values=data, fields=PRESET_FIELDS, err=str(exc))
        return _back(f"/admin/presets/{preset.id}", msg="Preset created.")

    @get("/presets/{preset_id:str}")
    async def preset(self, request: Request, preset_id: str) -> Response[Any]:
        if (gate := _gate(request)) is not None:
            return gate
        pid = _uuid(preset_id)
        row = await TranscodePreset.get_or_none(id=pid) if pid else None
        if row is None:
            return _back("/admin/presets", err=f"preset {preset_id} does not exist")
        values = {name: getattr(row, name) for name, _ in PRESET_FIELDS}
        return _page(request, "preset.html", preset=row, values=values, fields=PRESET_FIELDS)

    @post("/presets/{preset_id:str}")
    async def preset_save(self, request: Request, preset_id: str, data: FormData) -> Response[Any]:
        if (gate := _gate(request)) is not None:
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
    async def preset_delete(self, request: Request, preset_id: str) -> Response[Any]:
        if (gate := _gate(request)) is not None:
            return gate
        return await _act(
            _service().delete_preset(preset_id),
            back=f"/admin/presets/{preset_id}",
            done="/admin/presets",
            msg="Preset deleted.",
        )

    # -- jobs ---------------------------------------------------------------------------------

    @get("/jobs")
    async def jobs(self, request: Request) -> Response[Any]:
        if (gate := _gate(request)) is not None:
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
    async def job(self, request: Request, job_id: str) -> Response[Any]:
        if (gate := _gate(request)) is not None:
            return gate
        jid = _uuid(job_id)
        row = await TranscodeJob.get_or_none(id=jid) if jid else None
        if row is None:
            return _back("/admin/jobs", err=f"job {job_id} does not exist")
        chunks = await JobChunk.filter(job_id=jid).order_by("index")
        return _page(request, "job.html", job=row, chunks=chunks)

    @post("/jobs/{job_id:str}/cancel")
    async def job_cancel(self, request: Request, job_id: str) -> Response[Any]:
        if (gate := _gate(request)) is not None:
            return gate
        return await _act(_service().cancel_job(job_id), back=f"/admin/jobs/{job_id}", msg="Job cancelled.")

    @post("/jobs/{job_id:str}/retry")
    async def job_retry(self, request: Request, job_id: str) -> Response[Any]:
        if (gate := _gate(request)) is not None:
            return gate
        return await _act(_service().retry_job(job_id), back=f"/admin/jobs/{job_id}", msg="Job queued again.")

    # -- chunks -------------------------------------------------------------------------------

    @get("/chunks")
    async def chunks(self, request: Request) -> Response[Any]:
        if (gate := _gate(request)) is not None:
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
