"""Settings from the environment: defaults, and bad values that fail naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mpr.errors import ConfigError
from mpr.settings import Settings, find_ffmpeg


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.database_url, s.media_in, s.media_out, s.executor) == (
        "sqlite://var/mpr.db",
        "./media/in",
        "./media/out",
        "local",
    )
    assert s.redis_url is None and s.workers == 1 and s.chunk_workers >= 1
    assert s.port == 8702 and s.grpc_port == 50051 and s.load_plugins is None


def test_values_are_read() -> None:
    s = Settings.from_env(
        {
            "MPR_DATABASE_URL": "postgres://u@h:5432/db",
            "MEDIA_IN": "s3://bucket/in/",
            "MPR_EXECUTOR": "lambda",
            "MPR_REDIS_URL": "redis://localhost:6379/1",
            "MPR_WORKERS": "3",
            "MPR_CHUNK_SECONDS": "2.5",
            "MPR_LOAD_PLUGINS": "mpr-local, mpr-gcp",
            "MPR_API_TOKEN": "t0ken",
            "MPR_LOG_LEVEL": "debug",
        }
    )
    assert s.database_url.startswith("postgres://") and s.media_in == "s3://bucket/in/"
    assert (s.executor, s.workers, s.chunk_seconds) == ("lambda", 3, 2.5)
    assert s.load_plugins == ("mpr-local", "mpr-gcp") and s.log_level == "DEBUG"
    assert s.redacted()["api_token"] == "***"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"MPR_WORKERS": "many"}, "MPR_WORKERS"),
        ({"MPR_WORKERS": "0"}, "MPR_WORKERS"),
        ({"MPR_CHUNK_SECONDS": "0.1"}, "MPR_CHUNK_SECONDS"),
        ({"MPR_DATABASE_URL": "mysql://x"}, "MPR_DATABASE_URL"),
        ({"MPR_REDIS_URL": "localhost:6379"}, "MPR_REDIS_URL"),
        ({"MEDIA_BASE_URL": "cdn.example.com"}, "MEDIA_BASE_URL"),
        ({"MPR_EXECUTOR": "rm -rf"}, "MPR_EXECUTOR"),
        ({"MPR_LOG_LEVEL": "LOUD"}, "MPR_LOG_LEVEL"),
        ({"MPR_PORT": "http"}, "MPR_PORT"),
    ],
)
def test_bad_values_fail_naming_the_variable(env: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_ffmpeg_resolution(tmp_path) -> None:
    assert find_ffmpeg(None)
    with pytest.raises(ConfigError, match="MPR_FFMPEG"):
        find_ffmpeg(str(tmp_path / "no-ffmpeg"))


def test_cli_reports_a_bad_setting_without_a_traceback(media, monkeypatch) -> None:
    monkeypatch.setenv("MPR_WORKERS", "lots")
    proc = subprocess.run(
        [sys.executable, "-m", "mpr.cli", "scan"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1
    assert "MPR_WORKERS must be an integer" in proc.stderr and "Traceback" not in proc.stderr
