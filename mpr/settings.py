"""One typed settings object, read from the environment once.

Nothing else in core reads ``os.environ``. Plugins read their own prefixed
variables the same way, with the public helpers ``env_int``, ``env_float``,
``env_str`` and ``env_url`` (see ``mpr_lambda/settings.py``). A bad value raises
:class:`~mpr.errors.ConfigError` naming the variable and what was expected.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mpr.errors import ConfigError

EXECUTORS_HINT = "local, lambda or gcp (or one registered by a plugin)"


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    """Integer variable ``name`` (``default`` when unset); ConfigError naming it when bad or < minimum."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    """Number variable ``name`` (``default`` when unset); ConfigError naming it when bad or < minimum."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """String variable ``name``, stripped; ``default`` when unset or blank."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip()


def env_bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """Yes/no variable ``name`` (1/true/yes/on or 0/false/no/off); ConfigError naming it otherwise."""
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true/false, yes/no), got {env.get(name)!r}")


def env_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """URL variable ``name`` or None; ConfigError naming it when its scheme is not one of ``schemes``."""
    value = env_str(env, name)
    if value is not None and not value.startswith(tuple(f"{s}://" for s in schemes)):
        raise ConfigError(
            f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, got {value!r}"
        )
    return value


NOTIFY_EVENTS = ("completed", "failed", "cancelled")


def _notify_urls(env: Mapping[str, str]) -> tuple[str, ...]:
    """MPR_NOTIFY_URL: comma-separated http(s) URLs that get a POST when a job ends; ConfigError for others."""
    from urllib.parse import urlsplit

    urls = []
    for raw in (env_str(env, "MPR_NOTIFY_URL") or "").split(","):
        url = raw.strip()
        if not url:
            continue
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (raises ValueError for a bad port)
        except ValueError:
            raise ConfigError(f"MPR_NOTIFY_URL has an invalid URL: {url!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"MPR_NOTIFY_URL must be http:// or https:// URLs (comma-separated), got {url!r}")
        urls.append(url)
    return tuple(dict.fromkeys(urls))


def _notify_events(env: Mapping[str, str]) -> tuple[str, ...]:
    """MPR_NOTIFY_EVENTS: which final statuses notify (``completed,failed,cancelled``; ``job.`` prefix allowed)."""
    raw = env_str(env, "MPR_NOTIFY_EVENTS")
    if raw is None:
        return NOTIFY_EVENTS
    names = [n.strip().lower().removeprefix("job.") for n in raw.split(",") if n.strip()]
    if not names or any(n not in NOTIFY_EVENTS for n in names):
        raise ConfigError(
            f"MPR_NOTIFY_EVENTS must be a comma-separated subset of {','.join(NOTIFY_EVENTS)}, got {raw!r}"
        )
    return tuple(n for n in NOTIFY_EVENTS if n in names)


def find_ffmpeg(configured: str | None) -> str:
    """Return the ffmpeg binary: MPR_FFMPEG, else ``ffmpeg`` on PATH, else imageio-ffmpeg's."""
    if configured:
        path = shutil.which(configured) or (configured if Path(configured).is_file() else None)
        if not path:
            raise ConfigError(f"MPR_FFMPEG points to {configured!r}, which is not an executable file")
        return path
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        raise ConfigError("no ffmpeg found: install ffmpeg, or pip install imageio-ffmpeg, or set MPR_FFMPEG") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def _nice(env: Mapping[str, str]) -> int:
    value = env_int(env, "MPR_FFMPEG_NICE", 10, minimum=0)
    if value > 19:
        raise ConfigError(f"MPR_FFMPEG_NICE must be between 0 and 19, got {value}")
    return value


def _poll_interval(env: Mapping[str, str]) -> float:
    value = env_float(env, "MPR_POLL_INTERVAL", 30.0, minimum=0.0)
    if 0 < value < 0.1:
        raise ConfigError(f"MPR_POLL_INTERVAL must be 0 (off) or at least 0.1 seconds, got {value}")
    return value


def _scan_interval(env: Mapping[str, str]) -> float:
    value = env_float(env, "MPR_SCAN_INTERVAL", 60.0, minimum=0.0)
    if 0 < value < 0.1:
        raise ConfigError(f"MPR_SCAN_INTERVAL must be 0 (off) or at least 0.1 seconds, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything MPR reads from the environment (see README, "Configuration")."""

    database_url: str = "sqlite://var/mpr.db"
    media_in: str = "./media/in"
    media_out: str = "./media/out"
    media_base_url: str | None = None
    media_out_base_url: str | None = None
    executor: str = "local"
    redis_url: str | None = None
    workers: int = 1
    chunk_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    chunk_seconds: float = 10.0
    ffmpeg_path: str | None = None
    api_token: str | None = None
    open_reads: bool = False  # MPR_OPEN_READS=1: queries and media need no token (the old behaviour)
    media_url_seconds: int = 6 * 3600  # lifetime of the signed /media and thumbnail URLs the API returns
    admin_password: str | None = None
    callback_secret: str | None = None
    public_url: str = "http://127.0.0.1:8702"
    s3_endpoint_url: str | None = None
    heartbeat_timeout: float = 60.0
    poll_interval: float = 30.0  # mpr serve asks executors with poll() about unfinished jobs; 0: never
    scan_interval: float = 60.0  # mpr serve rescans MEDIA_IN (the watch folder) this often; 0: never
    upload_max_bytes: int = 20 * 1024**3  # largest POST /api/upload body
    var_dir: str = "var"
    host: str = "127.0.0.1"
    port: int = 8702
    api_processes: int = 1  # mpr serve runs this many API processes on one port (> 1 needs Redis)
    grpc_port: int = 50051
    load_plugins: tuple[str, ...] | None = None
    log_level: str = "INFO"
    forwarded_allow_ips: str = "127.0.0.1"
    ffmpeg_nice: int = 10
    notify_urls: tuple[str, ...] = ()  # MPR_NOTIFY_URL: POST a signed JSON notification when a job ends
    notify_secret: str | None = None  # MPR_NOTIFY_SECRET: HMAC key of those notifications (unset: unsigned)
    notify_events: tuple[str, ...] = NOTIFY_EVENTS  # MPR_NOTIFY_EVENTS: which final statuses notify
    auto_preset: str | None = None  # MPR_AUTO_PRESET: a preset name or id; every newly registered asset gets a job
    auto_skip_matching: bool = True  # MPR_AUTO_SKIP_MATCHING: no auto job for an asset already in the preset's format
    auto_chunked: bool = False  # MPR_AUTO_CHUNKED: auto jobs are chunked

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); raise ConfigError on a bad value."""
        env = os.environ if env is None else env
        database_url = env_str(env, "MPR_DATABASE_URL", cls.database_url)
        if not database_url.startswith(("sqlite://", "postgres://", "postgresql://", "psycopg://", "asyncpg://")):
            raise ConfigError(f"MPR_DATABASE_URL must start with sqlite:// or postgres://, got {database_url!r}")
        executor = env_str(env, "MPR_EXECUTOR", "local")
        if not executor.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"MPR_EXECUTOR must be a name such as {EXECUTORS_HINT}, got {executor!r}")
        plugins_raw = env_str(env, "MPR_LOAD_PLUGINS")
        load_plugins = None
        if plugins_raw is not None:
            load_plugins = tuple(p.strip() for p in plugins_raw.split(",") if p.strip())
        log_level = env_str(env, "MPR_LOG_LEVEL", "INFO").upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"MPR_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
        return cls(
            database_url=database_url,
            media_in=env_str(env, "MEDIA_IN", cls.media_in),
            media_out=env_str(env, "MEDIA_OUT", cls.media_out),
            media_base_url=env_url(env, "MEDIA_BASE_URL", ("http", "https")),
            media_out_base_url=env_url(env, "MEDIA_OUT_BASE_URL", ("http", "https")),
            executor=executor,
            redis_url=env_url(env, "MPR_REDIS_URL", ("redis", "rediss", "unix")),
            workers=env_int(env, "MPR_WORKERS", 1, minimum=1),
            chunk_workers=env_int(env, "MPR_CHUNK_WORKERS", os.cpu_count() or 1, minimum=1),
            chunk_seconds=env_float(env, "MPR_CHUNK_SECONDS", 10.0, minimum=0.5),
            ffmpeg_path=env_str(env, "MPR_FFMPEG"),
            api_token=env_str(env, "MPR_API_TOKEN"),
            open_reads=env_bool(env, "MPR_OPEN_READS"),
            media_url_seconds=env_int(env, "MPR_MEDIA_URL_SECONDS", 6 * 3600, minimum=60),
            admin_password=env_str(env, "MPR_ADMIN_PASSWORD"),
            callback_secret=env_str(env, "MPR_CALLBACK_SECRET"),
            public_url=(env_url(env, "MPR_PUBLIC_URL", ("http", "https")) or cls.public_url).rstrip("/"),
            s3_endpoint_url=env_url(env, "MPR_S3_ENDPOINT_URL", ("http", "https")),
            heartbeat_timeout=env_float(env, "MPR_HEARTBEAT_TIMEOUT", 60.0, minimum=1.0),
            poll_interval=_poll_interval(env),
            scan_interval=_scan_interval(env),
            upload_max_bytes=env_int(env, "MPR_UPLOAD_MAX_BYTES", cls.upload_max_bytes, minimum=1),
            var_dir=env_str(env, "MPR_VAR_DIR", "var"),
            host=env_str(env, "MPR_HOST", "127.0.0.1"),
            port=env_int(env, "MPR_PORT", 8702, minimum=1),
            api_processes=env_int(env, "MPR_API_PROCESSES", 1, minimum=1),
            grpc_port=env_int(env, "MPR_GRPC_PORT", 50051, minimum=0),
            load_plugins=load_plugins,
            log_level=log_level,
            # reverse proxies whose X-Forwarded-For/-Proto are trusted (client address for the
            # admin's login rate limit, https for Secure cookies); nginx on the same machine by default
            forwarded_allow_ips=env_str(env, "MPR_FORWARDED_ALLOW_IPS", "127.0.0.1"),
            ffmpeg_nice=_nice(env),
            notify_urls=_notify_urls(env),
            notify_secret=env_str(env, "MPR_NOTIFY_SECRET"),
            notify_events=_notify_events(env),
            auto_preset=env_str(env, "MPR_AUTO_PRESET"),
            auto_skip_matching=env_bool(env, "MPR_AUTO_SKIP_MATCHING", True),
            auto_chunked=env_bool(env, "MPR_AUTO_CHUNKED"),
        )

    @functools.cached_property
    def ffmpeg(self) -> str:
        """Path of the ffmpeg binary to run (resolved lazily, cached)."""
        return find_ffmpeg(self.ffmpeg_path)

    @property
    def var_path(self) -> Path:
        """Directory for MPR's own state (SQLite database, huey queue, thumbnails)."""
        path = Path(self.var_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def redacted(self) -> dict[str, object]:
        """Settings as a dict with secrets replaced by ``"***"`` (for status pages and logs)."""
        secret = {"api_token", "admin_password", "callback_secret", "notify_secret"}
        out: dict[str, object] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = "***" if name in secret and value else value
        # webhook URLs often carry a token in their path or query (Slack, Discord): only their origin is shown
        out["notify_urls"] = tuple(origin(u) + "/***" for u in self.notify_urls)
        return out


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, without user info, path or query (for logs and status pages)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call ``get_settings.cache_clear()``."""
    return Settings.from_env()
