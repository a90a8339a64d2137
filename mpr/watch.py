"""The watch folder: ``mpr serve`` rescans MEDIA_IN every ``MPR_SCAN_INTERVAL`` seconds.

Each pass is :func:`mpr.scan.scan` given the sizes and mtimes of the previous
pass, so a file is registered (and a changed one probed again) only once it
looked the same on two passes one interval apart: a file still being copied
waits for the next pass instead of becoming an asset in ``error``. A file
that stays the same but cannot be probed (a copy that stalled) does become
``error``; when it changes again the scan probes it again and it ends
``ready``. Files that vanished are marked ``missing`` as by ``mpr scan``.

Only one process scans when several ``mpr serve`` share a database: the one
holding the scan lease (:class:`ScanLease`). The lease lives where the API
processes already share state (the callback replay records, the admin
sessions): in Redis when ``MPR_REDIS_URL`` is set, else as an ``flock`` of
``MPR_VAR_DIR/scan.lock``. Processes that do not hold it try again every
interval and take over when the holder stops. Two scans at once would still
be correct (scanning is idempotent, a racing registration loses cleanly),
the lease only saves the duplicated listings and probes.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mpr.settings import Settings

log = logging.getLogger(__name__)

LEASE_KEY = "mpr:scan:lease"

# Redis: take the lease if it is free, or renew it if it is ours; 1 when we hold it now.
_TAKE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_GIVE_BACK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ScanLease:
    """Which ``mpr serve`` process scans: a Redis lease, or an ``flock`` of a file in the var dir.

    :meth:`take` is called before every pass; it renews the lease when this
    process holds it. A Redis lease lapses ``ttl`` seconds after its holder's
    last pass; an flock is released by the kernel when its process ends.
    """

    def __init__(self, settings: Settings, ttl: float) -> None:
        self.redis_url = settings.redis_url
        self.path = None if settings.redis_url else settings.var_path / "scan.lock"
        self.ttl_ms = max(1000, int(ttl * 1000))
        self.token = uuid.uuid4().hex
        self._redis: Any = None
        self._fd: int | None = None

    async def take(self) -> bool:
        """True when this process holds the lease (now taken or renewed)."""
        if self.redis_url:
            if self._redis is None:
                import redis.asyncio as aioredis

                self._redis = aioredis.from_url(self.redis_url)
            return bool(await self._redis.eval(_TAKE, 1, LEASE_KEY, self.token, self.ttl_ms))
        if self._fd is None:
            self._fd = await asyncio.to_thread(self._flock)
        return self._fd is not None

    def _flock(self) -> int | None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    async def keep(self) -> None:
        """Renew a Redis lease every third of its ttl until cancelled: a pass may outlast the ttl
        (thousands of new files to probe) and the lease must not lapse under it. An flock needs nothing."""
        if not self.redis_url:
            return
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                if not await self.take():
                    log.warning("the scan lease was taken over during a pass (MEDIA_IN may be scanned twice)")
            except Exception as exc:  # Redis unreachable: the pass goes on, the next take() tells
                log.debug("cannot renew the scan lease: %s", exc)

    async def give_back(self) -> None:
        """Release the lease (if held) so another process can take it at once."""
        if self._redis is not None:
            try:
                await self._redis.eval(_GIVE_BACK, 1, LEASE_KEY, self.token)
            except Exception as exc:  # it lapses on its own
                log.debug("cannot give back the scan lease: %s", exc)
            await self._redis.aclose()
            self._redis = None
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


async def scan_loop(interval: float, settings: Settings) -> None:
    """Scan MEDIA_IN every ``interval`` seconds while holding the scan lease, until cancelled.

    The first pass runs one interval after start-up. A failing pass (storage or
    database unreachable) is logged and the loop goes on: the first failure of
    a run of them with its traceback, the others at debug level, and once
    when a pass works again. The lease is renewed while a pass runs.
    """
    from mpr.scan import scan

    lease = ScanLease(settings, ttl=2 * interval + 60)
    looks: dict[str, tuple[int, float]] = {}
    leading = False
    failing = 0  # passes failed in a row
    log.info("watching MEDIA_IN (%s): a scan every %gs (MPR_SCAN_INTERVAL)", settings.media_in, interval)
    try:
        while True:
            await asyncio.sleep(interval)
            try:
                if not await lease.take():
                    if leading:
                        log.info("another process scans MEDIA_IN now")
                    leading, looks = False, {}
                    continue
                if not leading:
                    log.info("this process scans MEDIA_IN (the scan lease is ours)")
                    leading = True
                keeping = asyncio.create_task(lease.keep(), name="mpr-scan-lease")
                try:
                    result = await scan(settings, previous_looks=looks)
                finally:
                    keeping.cancel()
                    await asyncio.gather(keeping, return_exceptions=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failing += 1
                if failing == 1:
                    log.exception("watch-folder scan failed; trying again every %gs", interval)
                else:
                    log.debug("watch-folder scan failed again (%d in a row): %s", failing, exc)
                continue
            if failing:
                log.info("watch-folder scan works again after %d failed pass(es)", failing)
                failing = 0
            looks = result.looks
            if result.registered or result.updated or result.restored or result.queued:
                log.info(
                    "watch folder: %d registered, %d probed again, %d restored, %d still changing, %d queued",
                    result.registered,
                    result.updated,
                    result.restored,
                    result.waiting,
                    result.queued,
                )
    finally:
        await lease.give_back()
