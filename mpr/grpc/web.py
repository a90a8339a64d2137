"""Built-in gRPC-Web endpoint, so a browser streams job events without Envoy.

``POST /grpc/mpr.v1.ChunkerService/StreamChunkPipeline`` and ``/StreamJobs``
speak the gRPC-Web protocol (github.com/grpc/grpc, doc/PROTOCOL-WEB.md):
the request body is one length-prefixed message frame; the response is a
stream of message frames (flag 0x00, 4-byte big-endian length, protobuf) sent
as each event happens, closed by a trailer frame (flag 0x80) carrying
``grpc-status`` and ``grpc-message``. ``application/grpc-web-text`` is the
same, base64-encoded frame by frame. Errors found before streaming are sent
"trailers-only" (status in the response headers, empty body).

Mounted by the web app: ``Litestar(route_handlers=[..., grpc_web_router])``.
The app must not compress or buffer ``/grpc/`` responses.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.message import DecodeError
from litestar import Request, Response, Router, route
from litestar.enums import HttpMethod
from litestar.params import FromPath
from litestar.response import Stream

from mpr.errors import MprError, ValidationError
from mpr.events import JobEvent
from mpr.grpc import events_pb2
from mpr.grpc.server import all_jobs_stream, check_token, open_job_stream, status_code_of, to_pb
from mpr.settings import get_settings

log = logging.getLogger(__name__)

SERVICE = "mpr.v1.ChunkerService"
PROTO = "application/grpc-web+proto"
TEXT = "application/grpc-web-text"
DATA, TRAILER = 0x00, 0x80

# gRPC status codes (grpc.StatusCode values), without importing grpc's enum for each response
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL = 0, 1, 2, 3, 4, 12, 13

CORS_HEADERS = {
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Expose-Headers": "grpc-status, grpc-message, grpc-status-details-bin",
    "Access-Control-Max-Age": "86400",
}
ALLOWED_REQUEST_HEADERS = "authorization, content-type, x-grpc-web, x-user-agent, grpc-timeout"


def frame(payload: bytes, flag: int = DATA) -> bytes:
    """One gRPC-Web frame: flag byte, 4-byte big-endian length, payload."""
    return bytes([flag]) + len(payload).to_bytes(4, "big") + payload


def trailer_frame(status: int, message: str = "") -> bytes:
    """The closing frame with ``grpc-status`` and (percent-encoded) ``grpc-message``."""
    return frame(f"grpc-status:{status}\r\ngrpc-message:{encode_message(message)}\r\n".encode(), TRAILER)


def encode_message(message: str) -> str:
    """Percent-encode a grpc-message value as the gRPC spec requires (printable ASCII except %)."""
    return "".join(
        ch if " " <= ch <= "~" and ch != "%" else "".join(f"%{b:02X}" for b in ch.encode()) for ch in message
    )


def parse_frames(body: bytes) -> list[tuple[int, bytes]]:
    """Split a gRPC-Web body into (flag, payload) frames; ValidationError if it is malformed."""
    frames, pos = [], 0
    while pos < len(body):
        if len(body) - pos < 5:
            raise ValidationError("truncated gRPC-Web frame header")
        flag, size = body[pos], int.from_bytes(body[pos + 1 : pos + 5], "big")
        if len(body) - pos - 5 < size:
            raise ValidationError("truncated gRPC-Web frame")
        frames.append((flag, body[pos + 5 : pos + 5 + size]))
        pos += 5 + size
    return frames


def parse_timeout(value: str | None) -> float | None:
    """A ``grpc-timeout`` header (e.g. ``500m``, ``30S``) in seconds, or None."""
    m = re.fullmatch(r"(\d{1,8})([HMSmun])", (value or "").strip())
    if not m:
        return None
    scale = {"H": 3600, "M": 60, "S": 1, "m": 1e-3, "u": 1e-6, "n": 1e-9}[m.group(2)]
    return int(m.group(1)) * scale


def _cors(request: Request) -> dict[str, str]:
    return {**CORS_HEADERS, "Access-Control-Allow-Origin": request.headers.get("origin") or "*", "Vary": "Origin"}


def _trailers_only(request: Request, media_type: str, status: int, message: str) -> Response:
    headers = {**_cors(request), "grpc-status": str(status), "grpc-message": encode_message(message)}
    return Response(content=b"", status_code=200, media_type=media_type, headers=headers)


async def _open_chunk_pipeline(payload: bytes) -> AsyncIterator[JobEvent]:
    req = events_pb2.StreamRequest.FromString(payload)
    return await open_job_stream(req.job_id, req.after_sequence)


async def _open_jobs(payload: bytes) -> AsyncIterator[JobEvent]:
    req = events_pb2.StreamJobsRequest.FromString(payload)
    return all_jobs_stream(req.after_sequence)


METHODS: dict[str, Callable[[bytes], Any]] = {
    "StreamChunkPipeline": _open_chunk_pipeline,
    "StreamJobs": _open_jobs,
}


async def _frames(events: AsyncIterator[JobEvent], text: bool, timeout: float | None) -> AsyncIterator[bytes]:
    """Message frames as events arrive, then the trailer frame; base64 per frame in text mode."""

    def out(data: bytes) -> bytes:
        return base64.b64encode(data) if text else data

    status, message = OK, ""
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    try:
        while True:
            # the deadline covers only the wait for the next event, never our own yield
            async with asyncio.timeout_at(deadline):
                try:
                    ev = await anext(events)
                except StopAsyncIteration:
                    break
            yield out(frame(to_pb(ev).SerializeToString()))
    except TimeoutError:
        status, message = DEADLINE_EXCEEDED, "deadline exceeded"
    except MprError as exc:
        status, message = status_code_of(exc).value[0], str(exc)
    except Exception:
        log.exception("gRPC-Web event stream failed")
        status, message = INTERNAL, "internal error"
    finally:
        await _aclose(events)
    yield out(trailer_frame(status, message))


async def _aclose(events: Any) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a cancelled stream must not mask the real outcome
            log.debug("closing event stream failed", exc_info=True)


@route(
    f"/{SERVICE}/{{method:str}}",
    http_method=[HttpMethod.POST, HttpMethod.OPTIONS],
    status_code=200,
    include_in_schema=False,
)
async def grpc_web_call(request: Request, method: FromPath[str]) -> Response:
    """One server-streaming gRPC-Web call (binary or base64 text), or its CORS preflight."""
    if request.method == HttpMethod.OPTIONS:
        return _preflight(request)
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    text = content_type.startswith(TEXT)
    if not (text or content_type.startswith("application/grpc-web")):
        return Response(
            content=f"unsupported content type {content_type!r}; use {PROTO} or {TEXT}",
            status_code=415,
            media_type="text/plain",
            headers=_cors(request),
        )
    media_type = TEXT if text else PROTO
    opener = METHODS.get(method)
    if opener is None:
        return _trailers_only(request, media_type, UNIMPLEMENTED, f"method {SERVICE}/{method} is not implemented")
    try:
        check_token(request.headers.get("authorization"), get_settings())
        body = await request.body()
        if text:
            body = base64.b64decode(b"".join(body.split()), validate=False)
        frames = parse_frames(body)
        if len(frames) != 1 or frames[0][0] != DATA:
            raise ValidationError("expected exactly one uncompressed request message frame")
        try:
            events = await opener(frames[0][1])
        except DecodeError as exc:
            raise ValidationError(f"bad request message: {exc}") from None
    except MprError as exc:
        return _trailers_only(request, media_type, status_code_of(exc).value[0], str(exc))
    timeout = parse_timeout(request.headers.get("grpc-timeout"))
    return Stream(
        _frames(events, text, timeout),
        status_code=200,
        media_type=media_type,
        headers={**_cors(request), "Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )


def _preflight(request: Request) -> Response:
    """CORS preflight for browsers on another origin (bearer tokens, not cookies, so any origin may ask)."""
    requested = request.headers.get("access-control-request-headers") or ALLOWED_REQUEST_HEADERS
    return Response(content=b"", status_code=204, headers={**_cors(request), "Access-Control-Allow-Headers": requested})


grpc_web_router = Router(path="/grpc", route_handlers=[grpc_web_call])
"""Mount in the app: ``Litestar(route_handlers=[..., grpc_web_router])``."""
