"""``POST /api/upload?filename=NAME``: add a media file to MEDIA_IN from a browser (see :mod:`mpr.upload`).

The request body is the file itself (``fetch``/``XMLHttpRequest`` with a
``File`` body stream it from disk; no multipart parsing, nothing buffered in
memory). ``NAME`` may hold folders (``trailers/clip.mp4``) but must stay inside
MEDIA_IN and have a media extension. Needs ``Authorization: Bearer
<MPR_API_TOKEN>`` when a token is set, like GraphQL mutations. Answers 201
with the asset (``id``, ``path``, ``status`` ...) once the file is stored,
registered and probed; 400 for a bad name or a multipart form body, 401 without the token, 413 over
``MPR_UPLOAD_MAX_BYTES``.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, post
from litestar.params import FromQuery
from litestar.response import Response

from mpr.api.deps import app_settings
from mpr.api.graphql import bearer_token, token_ok
from mpr.errors import AuthError, ValidationError
from mpr.upload import UploadTooLarge, upload


@post("/api/upload", request_max_body_size=None, include_in_schema=False)
async def upload_route(request: Request, filename: FromQuery[str]) -> Response[dict[str, Any]]:
    """Stream the body into MEDIA_IN as ``filename`` (or the next free name) and register it."""
    settings = app_settings(request)
    if not token_ok(settings, bearer_token(request.headers)):
        raise AuthError("uploading needs 'Authorization: Bearer <token>' (MPR_API_TOKEN is set)")
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        # the form envelope would be stored as the "media file" (an asset in error): say how to send it
        raise ValidationError(
            "send the file itself as the request body (curl --data-binary @FILE), not a multipart form (curl -F)"
        )
    try:
        asset, renamed = await upload(filename, request.stream(), length=request.content_length, settings=settings)
    except UploadTooLarge as exc:
        return Response({"error": str(exc)}, status_code=413)
    body = {
        "id": str(asset.id),
        "path": asset.path,
        "filename": asset.filename,
        "status": asset.status.value,
        "kind": asset.kind.value,
        "size": asset.size,
        "duration": asset.duration,
        "error": asset.error,
        "renamed": renamed,
    }
    return Response(body, status_code=201)


routes = [upload_route]
