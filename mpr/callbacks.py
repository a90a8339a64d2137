"""Signed completion callbacks from remote executors (Lambda, Cloud Run) to MPR.

The sender signs ``f"{timestamp}.".encode() + body`` with HMAC-SHA256 and
``MPR_CALLBACK_SECRET``; the receiver checks the signature, rejects
timestamps older than :data:`MAX_AGE` seconds, and rejects a replayed
signature. Plugins import this module (never ``mpr.api``).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from mpr.errors import AuthError

TIMESTAMP_HEADER = "X-MPR-Timestamp"
SIGNATURE_HEADER = "X-MPR-Signature"
MAX_AGE = 300
MAX_BODY = 64 * 1024


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``: ``sha256=<hex>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sign_headers(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers to send with a callback ``body`` (content type, timestamp, signature)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: signature(body, secret, ts),
    }


def verify(headers: dict[str, str], body: bytes, secret: str | None, now: float | None = None) -> int:
    """Check a callback's signature and age; return its timestamp or raise AuthError.

    ``headers`` keys are matched case-insensitively. Replay protection (the
    same signature twice) is the receiver's job: it stores seen signatures
    for :data:`MAX_AGE` seconds.
    """
    if not secret:
        raise AuthError("callbacks are disabled: MPR_CALLBACK_SECRET is not set")
    lower = {k.lower(): v for k, v in headers.items()}
    ts_raw = lower.get(TIMESTAMP_HEADER.lower())
    sig = lower.get(SIGNATURE_HEADER.lower())
    if not ts_raw or not sig:
        raise AuthError("callback is not signed")
    try:
        ts = int(ts_raw)
    except ValueError:
        raise AuthError("callback timestamp is not an integer") from None
    now = time.time() if now is None else now
    if abs(now - ts) > MAX_AGE:
        raise AuthError("callback timestamp is too old or in the future")
    if not hmac.compare_digest(signature(body, secret, ts), sig):
        raise AuthError("callback signature does not match")
    return ts
