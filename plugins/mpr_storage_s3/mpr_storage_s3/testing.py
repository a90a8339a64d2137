"""Test helpers shared by the S3, Lambda and GCP plugin tests: a moto server on a free port.

Import the fixtures into a ``conftest.py``::

    from mpr_storage_s3.testing import moto_server, s3_bucket  # noqa: F401

Nothing here runs at import time; pytest and moto are imported only when a
fixture is used.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@dataclass(frozen=True)
class MotoServer:
    """A running moto server: its endpoint URL and port."""

    url: str
    port: int

    def client(self, service: str):
        """A boto3 client for ``service`` talking to this server."""
        import boto3

        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1")

    def configure(self, config: dict) -> None:
        """POST /moto-api/config (e.g. let Step Functions really run state machines)."""
        import httpx

        httpx.post(f"{self.url}/moto-api/config", json=config, timeout=10).raise_for_status()

    def reset(self) -> None:
        """Forget every resource on the server."""
        import httpx

        httpx.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_server: MotoServer | None = None
_server_lock = threading.Lock()


def start_moto_server() -> MotoServer:
    """The process's moto server (ThreadedMotoServer on a free port), started on first use.

    One per process even when several conftests import the fixture, so
    ``MOTO_PORT`` (which moto's Step Functions uses to reach its own Lambda)
    always names the server in use. Fake AWS credentials are put in the
    environment; the server stops when the process exits.
    """
    global _server
    with _server_lock:
        if _server is None:
            from moto.server import ThreadedMotoServer

            port = _free_port()
            os.environ.update(AWS_TEST_ENV)
            os.environ["MOTO_PORT"] = str(port)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            atexit.register(server.stop)
            _server = MotoServer(url=f"http://127.0.0.1:{port}", port=port)
        return _server


@pytest.fixture(scope="session")
def moto_server() -> MotoServer:
    """moto's server for S3, Step Functions, Lambda, IAM and SSM (see :func:`start_moto_server`)."""
    return start_moto_server()


@pytest.fixture
def s3_bucket(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, uniquely named bucket on the moto server; MPR_S3_ENDPOINT_URL points at the server."""
    name = f"mpr-test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("MPR_S3_ENDPOINT_URL", moto_server.url)
    for k, v in AWS_TEST_ENV.items():
        monkeypatch.setenv(k, v)
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket=name)
    yield name
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=name)
