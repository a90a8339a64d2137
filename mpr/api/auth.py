"""The API token on HTTP requests, and signed media URLs.

With ``MPR_API_TOKEN`` set, every read needs the token too (GraphQL queries,
``/media/*``, thumbnails) unless ``MPR_OPEN_READS=1``. A browser's ``<video
src>`` or ``<img src>`` cannot send an Authorization header, so the media and
thumbnail URLs the API returns carry a short-lived signature instead:
``?exp=<unix seconds>&sig=<base64url HMAC-SHA256 of "path\\nexp">``. The
signing key is derived from the token (HMAC with a fixed label), so a URL
never reveals the token, and changing the token revokes every URL. A
signature covers exactly one path (the query string ``t``/``w`` of a
thumbnail are left free).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
from typing import Any

from mpr.settings import Settings

_KEY_LABEL = b"mpr media url signing v1"
MAX_STEP = 3600  # signed URLs stay the same for up to an hour (a re-read list does not reload <video>)


def bearer_token(headers: Any, params: dict[str, Any] | None = None) -> str | None:
    """The bearer token from an Authorization header or graphql-ws connection params."""
    raw = headers.get("authorization") if headers is not None else None
    if not raw and params:
        raw = params.get("Authorization") or params.get("authorization")
        if not raw and isinstance(params.get("token"), str):
            return params["token"]
    if isinstance(raw, str) and raw.lower().startswith("bearer "):
        return raw[7:].strip()
    return None


def token_ok(settings: Settings, token: str | None) -> bool:
    """True when no API token is configured, or ``token`` equals it (constant-time)."""
    if not settings.api_token:
        return True
    if not isinstance(token, str):
        return False
    # surrogatepass: a lone surrogate (JSON allows "\ud800" in graphql-ws connection params) is just wrong
    return hmac.compare_digest(token.encode("utf-8", "surrogatepass"), settings.api_token.encode())


def reads_need_token(settings: Settings) -> bool:
    """True when queries and media need the token: MPR_API_TOKEN set and MPR_OPEN_READS off."""
    return bool(settings.api_token) and not settings.open_reads


def _key(token: str) -> bytes:
    return hmac.new(token.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _signature(token: str, path: str, exp: int) -> str:
    message = f"{path}\n{exp}".encode("utf-8", "surrogatepass")
    digest = hmac.new(_key(token), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def expiry(settings: Settings, now: float | None = None) -> int:
    """When a URL signed now expires: at least ``media_url_seconds`` ahead, rounded up to a step.

    The rounding keeps a URL the same between two reads of a list, so the browser's
    cache and a playing ``<video>`` are not disturbed by every refresh.
    """
    lifetime = settings.media_url_seconds
    step = max(1, min(MAX_STEP, lifetime // 6))
    at = int(time.time() if now is None else now) + lifetime
    return (at // step + 1) * step


def sign_url(settings: Settings, path: str, url: str | None = None, now: float | None = None) -> str:
    """``url`` (default ``path``, which is the decoded path the server will see) with ``exp`` and ``sig``.

    Unchanged when reads need no token.
    """
    url = path if url is None else url
    if not reads_need_token(settings):
        return url
    assert settings.api_token
    exp = expiry(settings, now)
    query = urllib.parse.urlencode({"exp": exp, "sig": _signature(settings.api_token, path, exp)})
    return url + ("&" if "?" in url else "?") + query


def signature_ok(settings: Settings, path: str, exp: str | None, sig: str | None, now: float | None = None) -> bool:
    """True for a signature of exactly ``path`` that has not expired (compared in constant time)."""
    if not settings.api_token or not exp or not sig or not exp.isascii() or not exp.isdigit() or len(exp) > 12:
        return False
    if int(exp) < (time.time() if now is None else now):
        return False
    expected = _signature(settings.api_token, path, int(exp))
    return hmac.compare_digest(expected.encode(), sig.encode("utf-8", "surrogatepass"))


def read_allowed(request: Any, settings: Settings) -> bool:
    """May this HTTP request read media: open reads, the bearer token, or a valid signed URL for its path."""
    if not reads_need_token(settings):
        return True
    if bearer_token(request.headers) is not None and token_ok(settings, bearer_token(request.headers)):
        return True
    params = request.query_params
    return signature_ok(settings, request.scope["path"], params.get("exp"), params.get("sig"))
