"""Settings of the local executor, read from its own ``MPR_LOCAL_*`` variables.

The core settings it also uses: ``MPR_REDIS_URL`` (Redis queue instead of
SQLite), ``MPR_WORKERS`` (concurrent jobs per worker), ``MPR_VAR_DIR`` (where
the SQLite queue lives) and ``MPR_HEARTBEAT_TIMEOUT`` (when the reaper gives a
silent job up as "worker lost").
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from mpr.errors import ConfigError
from mpr.settings import env_float as _float


@dataclass(frozen=True)
class LocalSettings:
    """What the local executor reads from the environment."""

    queue_name: str = "mpr"
    heartbeat_interval: float = 0.5
    reaper_interval: float | None = None
    poll_interval: float = 0.01
    max_poll_interval: float = 0.25

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LocalSettings:
        """Build from ``env`` (default ``os.environ``); raise ConfigError on a bad value."""
        env = os.environ if env is None else env
        name = (env.get("MPR_LOCAL_QUEUE") or "").strip() or cls.queue_name
        if not re.fullmatch(r"[A-Za-z0-9_]{1,100}", name):
            raise ConfigError(f"MPR_LOCAL_QUEUE must be letters, digits and _ (at most 100), got {name!r}")
        reaper_raw = (env.get("MPR_LOCAL_REAPER_INTERVAL") or "").strip()
        return cls(
            queue_name=name,
            heartbeat_interval=_float(env, "MPR_LOCAL_HEARTBEAT_INTERVAL", cls.heartbeat_interval, 0.05),
            reaper_interval=_float(env, "MPR_LOCAL_REAPER_INTERVAL", 0.0, 0.1) if reaper_raw else None,
            poll_interval=_float(env, "MPR_LOCAL_POLL_INTERVAL", cls.poll_interval, 0.001),
            max_poll_interval=_float(env, "MPR_LOCAL_MAX_POLL_INTERVAL", cls.max_poll_interval, 0.001),
        )

    def reaper_every(self, heartbeat_timeout: float) -> float:
        """Seconds between reaper passes: given, else a third of the timeout, at most 10 s."""
        if self.reaper_interval is not None:
            return self.reaper_interval
        return max(0.2, min(heartbeat_timeout / 3.0, 10.0))
