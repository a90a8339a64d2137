"""Media routes: ``/media/in/{key}``, ``/media/out/{key}`` and asset thumbnails.

Local roots are served with HTTP Range (206) so a ``<video>`` element can
seek; remote roots (S3, GCS) answer with a redirect to ``storage.url()``
(public or presigned). Keys are checked only by :func:`mpr.storage.safe_key`
(through the storage backend): an escaping key gets 400, a missing one 404.

With ``MPR_API_TOKEN`` set (and ``MPR_OPEN_READS`` off) every route first needs
the bearer token or a signed URL for exactly its path (:mod:`mpr.api.auth`):
anything else gets 401 before a file, a storage URL or an asset is looked up.

Every route also answers HEAD with exactly the status and headers its GET
would send (Content-Length, Content-Range, Location ...) and no body. Litestar
2.x routes HEAD to a handler but does not mark the response as a HEAD
response itself (a ``File`` returned from ``@head`` is still streamed at the
ASGI level, left to the server to drop), so :class:`HeadResponse` and
:class:`HeadFile` set Litestar's ``is_head_response``: no file is opened or read.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from litestar import HttpMethod, Request, route
from litestar.params import FromPath, FromQuery
from litestar.response import File, Redirect, Response, Stream

from mpr.api.auth import read_allowed
from mpr.api.deps import app_settings
from mpr.errors import MprError, NotFound, StorageError
from mpr.models import AssetKind, MediaAsset
from mpr.settings import Settings
from mpr.storage import Storage, media_in, media_out, safe_key

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# A thumbnail's width is rounded up to one of these, its time to one of THUMB_TIMES + 1 points of the
# asset (and to 0.1 s): each pair is an ffmpeg run and a cached file, so a client (or one signed URL, whose
# t and w are free) can make at most len(THUMB_WIDTHS) * (THUMB_TIMES + 1) of them per asset.
THUMB_WIDTHS = (80, 160, 320, 480, 640, 960, 1280, 1920)
THUMB_TIMES = 200
THUMB_RUNS = 2  # thumbnails made at once per API process; more requests wait their turn


def thumb_width(w: int) -> int:
    """The smallest of THUMB_WIDTHS at least ``w`` wide (the largest for anything wider)."""
    return next((width for width in THUMB_WIDTHS if width >= w), THUMB_WIDTHS[-1])


def thumb_time(t: float | None, duration: float) -> float:
    """``t`` (default 10 % in) clamped to the asset and rounded to its time grid: one of THUMB_TIMES + 1 points."""
    at = duration * 0.1 if t is None else t
    at = max(0.0, min(at, max(0.0, duration - 0.1)))  # NaN goes to 0.0
    step = max(0.1, duration / THUMB_TIMES)
    return round(min(round(at / step) * step, max(0.0, duration - 0.1)), 1)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for a single ``bytes=`` range, None for "whole file".

    Raises ValueError for an unsatisfiable range (answered with 416).
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match:
        return None  # multi-range or another unit: serve the whole file (allowed by RFC 9110)
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            raise ValueError("empty suffix range")
        return max(0, size - length), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or end < start:
        raise ValueError("range not satisfiable")
    return start, end


def _read(storage: Storage, key: str, start: int, end: int) -> Iterator[bytes]:
    with storage.open_read(key, start, end) as fh:
        while True:
            data = fh.read(CHUNK)
            if not data:
                return
            yield data


class HeadResponse(Response[None]):
    """The answer to a HEAD request: ``status_code`` and ``headers`` (as GET would send them), no body."""

    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(None, status_code=status_code, headers=headers)

    def to_asgi_response(self, app: Any, request: Request, **kwargs: Any) -> Any:
        kwargs["is_head_response"] = True  # no Content-Type/Length defaults, no body: ours are in the headers
        return super().to_asgi_response(app, request, **kwargs)


class HeadFile(File):
    """A ``File`` answered to HEAD: Litestar's own Content-Length, Last-Modified and ETag, no body."""

    def to_asgi_response(self, app: Any, request: Request, **kwargs: Any) -> Any:
        kwargs["is_head_response"] = True
        response = super().to_asgi_response(app, request, **kwargs)
        if self.media_type:  # Litestar leaves Content-Type out of HEAD responses; GET has it
            response.headers.setdefault("content-type", str(self.media_type))
        return response


def _is_head(request: Request) -> bool:
    return request.method == HttpMethod.HEAD


def _plain(status: int, message: str, *, head: bool = False, headers: dict[str, str] | None = None) -> Response[Any]:
    body = (message + "\n").encode()
    if head:
        return HeadResponse(
            status,
            {**(headers or {}), "Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body))},
        )
    return Response(body, status_code=status, media_type="text/plain", headers=headers)


async def serve_media(request: Request, storage: Storage, key: str) -> Response[Any]:
    """Serve ``key`` of ``storage`` (Range-aware), or redirect to its URL when the storage is remote.

    A HEAD request gets the same status and headers, without a body (nothing is read).
    """
    head = _is_head(request)
    key = key.lstrip("/") if key.startswith("/") and not key.startswith("//") else key
    try:
        key = safe_key(key)
        local = storage.local_path(key)
        if local is None:
            url = await asyncio.to_thread(storage.url, key)
            if not url:
                return _plain(404, "this storage cannot serve files", head=head)
            if head:
                return HeadResponse(
                    302, {"Location": url, "Content-Type": "text/plain; charset=utf-8", "Content-Length": "0"}
                )
            return Redirect(url, status_code=302)
        info = await asyncio.to_thread(storage.stat, key)
    except NotFound:
        return _plain(404, "not found", head=head)
    except StorageError as exc:
        return _plain(400, str(exc), head=head)
    size = info.size
    media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=60"}
    try:
        byte_range = parse_range(request.headers.get("range"), size)
    except ValueError:
        return _plain(416, "range not satisfiable", head=head, headers={"Content-Range": f"bytes */{size}"})
    if byte_range is None:
        start, end, status = 0, size - 1, 200
    else:
        (start, end), status = byte_range, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(max(0, end - start + 1))
    if head:
        return HeadResponse(status if size else 200, {**headers, "Content-Type": media_type})
    if size == 0:
        return Response(b"", status_code=200, media_type=media_type, headers=headers)
    return Stream(_read(storage, key, start, end), status_code=status, media_type=media_type, headers=headers)


GET_HEAD = [HttpMethod.GET, HttpMethod.HEAD]
UNAUTHORIZED = (
    "this needs 'Authorization: Bearer <token>' or a signed URL from the API (exp and sig; MPR_API_TOKEN is set)"
)


def refused(request: Request, settings: Settings) -> Response[Any] | None:
    """401 (no file data, nothing looked up) unless the request may read media; None when it may."""
    if read_allowed(request, settings):
        return None
    return _plain(401, UNAUTHORIZED, head=_is_head(request), headers={"WWW-Authenticate": 'Bearer realm="mpr"'})


@route("/media/in/{key:path}", http_method=GET_HEAD, include_in_schema=False)
async def media_in_route(request: Request, key: FromPath[str]) -> Response[Any]:
    """A source file under MEDIA_IN."""
    settings = app_settings(request)
    return refused(request, settings) or await serve_media(request, media_in(settings), key)


@route("/media/out/{key:path}", http_method=GET_HEAD, include_in_schema=False)
async def media_out_route(request: Request, key: FromPath[str]) -> Response[Any]:
    """An output file under MEDIA_OUT."""
    settings = app_settings(request)
    return refused(request, settings) or await serve_media(request, media_out(settings), key)


# --------------------------------------------------------------------------- thumbnails


def _thumbnail(asset_path: str, at: float, width: int, target: Path, settings: Settings) -> None:
    from mpr import ffmpeg

    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp.jpg")
    with media_in(settings).local_copy(asset_path) as src:
        argv = [
            settings.ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-y",
            "-ss",
            f"{at:.3f}",
            "-i",
            "file:" + os.path.abspath(src),
            "-frames:v",
            "1",
            "-vf",
            f"scale={width}:-2",
            "-q:v",
            "5",
            "-f",
            "image2",
            "-c:v",
            "mjpeg",
            "file:" + os.path.abspath(tmp),
        ]
        try:
            ffmpeg.run(argv)
            if not tmp.exists() or tmp.stat().st_size == 0:
                raise NotFound("no frame at that time")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def _thumb_slots(request: Request) -> asyncio.Semaphore:
    """The app's THUMB_RUNS slots for making thumbnails (made on first use, on the app's loop)."""
    state = request.app.state
    if getattr(state, "thumb_slots", None) is None:
        state.thumb_slots = asyncio.Semaphore(THUMB_RUNS)
    return state.thumb_slots


@route("/api/assets/{asset_id:str}/thumbnail", http_method=GET_HEAD, include_in_schema=False)
async def thumbnail(
    request: Request, asset_id: FromPath[str], t: FromQuery[float | None] = None, w: FromQuery[int] = 320
) -> Response[Any]:
    """A JPEG frame of a video asset at ``t`` seconds, ``w`` pixels wide (cached under var/thumbs).

    HEAD makes (and caches) the frame too, to answer with its real Content-Length.
    """
    settings = app_settings(request)
    head = _is_head(request)
    if (denied := refused(request, settings)) is not None:
        return denied
    try:
        aid = uuid.UUID(asset_id)
    except ValueError:
        return _plain(404, f"asset {asset_id} does not exist", head=head)
    asset = await MediaAsset.get_or_none(id=aid)
    if asset is None:
        return _plain(404, f"asset {asset_id} does not exist", head=head)
    if asset.kind != AssetKind.VIDEO:
        return _plain(404, "audio assets have no thumbnail", head=head)
    at = thumb_time(t, asset.duration or 0.0)
    width = thumb_width(w)
    target = settings.var_path / "thumbs" / str(aid) / f"{at:.1f}_{width}.jpg"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            async with _thumb_slots(request):
                if not target.exists():  # made by a request that held the slot before this one
                    await asyncio.to_thread(_thumbnail, asset.path, at, width, target, settings)
        except NotFound as exc:
            return _plain(404, str(exc), head=head)
        except MprError as exc:
            return _plain(422, f"cannot make a thumbnail: {str(exc).splitlines()[0][:200]}", head=head)
    return (HeadFile if head else File)(
        target,
        media_type="image/jpeg",
        headers={"Cache-Control": "public, max-age=86400"},
        content_disposition_type="inline",
    )


routes = [media_in_route, media_out_route, thumbnail]
