"""Outgoing job notifications: a signed JSON POST to ``MPR_NOTIFY_URL`` when a job ends.

:class:`Notifier` is an event sink (registered by the default plugin
``mpr.default_plugins.notify`` when ``MPR_NOTIFY_URL`` is set). Its
``emit`` only reacts to final status events, reads the job's row once and
puts one delivery per URL on a bounded queue; daemon threads send them with
urllib, so a slow or dead receiver never holds up a job transition or a
worker. Final status events are emitted once, by the process that made the
transition (``jobs.transition``); readers of the event bus (Redis Streams
consumers, GraphQL/gRPC streams) never pass events to sinks, so each final
status is notified once however many MPR processes run.

Each POST carries ``X-MPR-Delivery`` (one id per event, the same on every
retry and every URL) and, with ``MPR_NOTIFY_SECRET``, the same signature
headers as the inbound callbacks (:func:`mpr.callbacks.sign_headers`).
"""

from __future__ import annotations

import atexit
import base64
import http.client
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mpr.callbacks import sign_headers
from mpr.events import JobEvent
from mpr.settings import NOTIFY_EVENTS, origin

if TYPE_CHECKING:
    from mpr.models import TranscodeJob
    from mpr.settings import Settings

log = logging.getLogger(__name__)

DELIVERY_HEADER = "X-MPR-Delivery"
EVENT_HEADER = "X-MPR-Event"
TIMEOUT = 5.0  # seconds, per connection attempt and per socket read
ATTEMPTS = 3  # the first try and two retries, on 5xx answers and connection errors only
BACKOFF = 1.0  # seconds before the second attempt; doubled before each further one
QUEUE_SIZE = 1000  # deliveries waiting to be sent; past that new ones are dropped with a warning
THREADS = 4  # senders per process, so one hanging receiver does not hold up the others
IDLE_SECONDS = 30.0  # a sender thread with nothing to do for this long ends (a new one starts on demand)
FLUSH_SECONDS = 10.0  # how long process exit waits for deliveries still queued or being retried


@dataclass(frozen=True)
class Delivery:
    """One notification to one URL: the exact body and the delivery id every attempt reuses."""

    url: str
    body: bytes
    delivery_id: str
    event: str
    job_id: str


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def job_payload(job: TranscodeJob, status: str, sent_at: float | None = None) -> dict[str, Any]:
    """The notification body for ``job`` having become ``status`` (``completed``, ``failed``, ``cancelled``)."""
    import datetime as dt

    sent = dt.datetime.fromtimestamp(time.time() if sent_at is None else sent_at, dt.UTC)
    asset_id = job.source_asset_id  # type: ignore[attr-defined]
    return {
        "event": f"job.{status}",
        "job": {
            "id": str(job.id),
            "status": status,
            "sourceAssetId": str(asset_id) if asset_id else None,
            "sourcePath": job.source_path,
            "preset": (job.preset_snapshot or {}).get("name", ""),
            "outputPath": job.output_path,
            "outputSize": job.output_size,
            "error": job.error,
            "startedAt": _iso(job.started_at),
            "finishedAt": _iso(job.finished_at),
            "attempts": job.attempts,
        },
        "sentAt": sent.isoformat(),
    }


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without user info, and the ``Authorization: Basic`` header of that user info (``{}`` without).

    urllib does not send a URL's ``user:password@`` (it takes it for part of the host name and
    fails to resolve it): a receiver behind basic auth gets the credentials as a header instead.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    token = base64.b64encode(credentials.encode()).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not an instruction: urllib would turn the POST into a bodyless GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)
_live: weakref.WeakSet[Notifier] = weakref.WeakSet()
_live_lock = threading.Lock()
_atexit_registered = False


class Notifier:
    """Event sink that POSTs a notification for each final job status to ``urls`` from background threads."""

    def __init__(
        self,
        urls: tuple[str, ...],
        secret: str | None = None,
        events: tuple[str, ...] = NOTIFY_EVENTS,
        *,
        timeout: float = TIMEOUT,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        queue_size: int = QUEUE_SIZE,
        threads: int = THREADS,
    ) -> None:
        self.urls = tuple(urls)
        self.secret = secret
        self.events = frozenset(events)
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_threads = threads
        self._queue: queue.Queue[Delivery | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._threads = 0
        self._pending = 0  # queued or being sent
        self._closed = False
        global _atexit_registered
        with _live_lock:
            _live.add(self)
            if not _atexit_registered:
                # a CLI command (mpr cancel, mpr lambda-poll) or mpr worker exits right after its last
                # transition: give the daemon sender threads a bounded moment to deliver what is queued
                atexit.register(flush_all)
                _atexit_registered = True

    @classmethod
    def from_settings(cls, settings: Settings) -> Notifier:
        # the module's constants are read here, at build time (tests shorten them)
        return cls(
            settings.notify_urls,
            settings.notify_secret,
            settings.notify_events,
            timeout=TIMEOUT,
            attempts=ATTEMPTS,
            backoff=BACKOFF,
            queue_size=QUEUE_SIZE,
            threads=THREADS,
        )

    def __repr__(self) -> str:
        return f"Notifier({', '.join(origin(u) for u in self.urls)})"

    # -- the sink ---------------------------------------------------------------------------

    async def emit(self, event: JobEvent) -> None:
        """Queue the notifications of a final status event; other events are ignored. Never blocks on HTTP."""
        if not event.final or event.status not in self.events or self._closed:
            return
        from mpr.models import TranscodeJob

        job = await TranscodeJob.get_or_none(id=event.job_id)
        if job is None:  # deleted in the meantime: nothing to describe
            log.warning("job %s became %s but is gone; no notification sent", event.job_id, event.status)
            return
        self.submit(job_payload(job, event.status), str(job.id))

    def submit(self, payload: dict[str, Any], job_id: str = "") -> str:
        """Queue ``payload`` for every URL under one new delivery id (returned); drops it when the queue is full."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        delivery_id = str(uuid.uuid4())
        for url in self.urls:
            item = Delivery(url, body, delivery_id, str(payload.get("event", "")), job_id)
            with self._lock:
                try:
                    self._queue.put_nowait(item)
                except queue.Full:
                    log.warning(
                        "notification queue full (%d waiting): %s of job %s to %s dropped",
                        self._queue.maxsize,
                        item.event,
                        job_id,
                        origin(url),
                    )
                    continue
                self._pending += 1
                if self._threads < self.max_threads:
                    self._threads += 1
                    threading.Thread(target=self._run, name="mpr-notify", daemon=True).start()
        return delivery_id

    # -- the senders ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    # checked under the lock submit() holds: an item put before this check is seen
                    if self._queue.empty():
                        self._threads -= 1
                        return
                continue
            if item is None:  # close()
                with self._lock:
                    self._threads -= 1
                return
            try:
                self.deliver(item)
            except Exception:  # a sender thread must survive anything
                log.exception("notification %s of job %s to %s failed", item.event, item.job_id, origin(item.url))
            finally:
                with self._lock:
                    self._pending -= 1
                    self._done.notify_all()

    def deliver(self, item: Delivery) -> int:
        """Send ``item`` with retries; return the number of attempts made. Logs a warning when it gives up."""
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            headers = sign_headers(item.body, self.secret) if self.secret else {"Content-Type": "application/json"}
            if not self.secret:
                headers["X-MPR-Timestamp"] = str(int(time.time()))
            headers.update({DELIVERY_HEADER: item.delivery_id, EVENT_HEADER: item.event, "User-Agent": "MPR-notify"})
            url, auth = split_credentials(item.url)
            headers.update(auth)
            request = urllib.request.Request(url, data=item.body, headers=headers, method="POST")
            try:
                with _opener.open(request, timeout=self.timeout) as response:
                    response.read(64 * 1024)
                return attempt
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code < 500:  # 4xx (or an unfollowed redirect): the receiver refused it, retrying won't help
                    log.warning(
                        "notification %s of job %s to %s refused with HTTP %d; not retried",
                        item.event,
                        item.job_id,
                        origin(item.url),
                        exc.code,
                    )
                    return attempt
                reason = f"HTTP {exc.code}"
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
            if attempt < self.attempts:
                time.sleep(delay)
                delay *= 2
        log.warning(
            "notification %s of job %s to %s failed after %d attempts: %s",
            item.event,
            item.job_id,
            origin(item.url),
            self.attempts,
            reason,
        )
        return self.attempts

    # -- draining ---------------------------------------------------------------------------

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait up to ``timeout`` s for queued deliveries (retries included); True when none is left."""
        deadline = time.monotonic() + timeout
        with self._done:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("%d job notification(s) still unsent at shutdown", self._pending)
                    return False
                self._done.wait(remaining)
        return True

    def close(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Flush, then stop the sender threads; later events are ignored. True when everything was sent."""
        flushed = self.flush(timeout)
        with self._lock:
            self._closed = True
            threads = self._threads
        for _ in range(threads):
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        return flushed


def flush_all(timeout: float = FLUSH_SECONDS) -> bool:
    """Flush every live notifier of this process (at exit and at app shutdown)."""
    deadline = time.monotonic() + timeout
    with _live_lock:
        notifiers = list(_live)
    return all([n.flush(max(0.0, deadline - time.monotonic())) for n in notifiers])


def close_all(timeout: float = FLUSH_SECONDS) -> None:
    """Close every live notifier (tests)."""
    with _live_lock:
        notifiers = list(_live)
    for notifier in notifiers:
        notifier.close(timeout)
