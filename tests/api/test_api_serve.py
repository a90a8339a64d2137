"""`mpr serve` as a user runs it: a subprocess with the embedded worker, the seed documents pasted
as-is, the admin login, and a signed callback that completes a job while an unsigned one gets 401."""

# ruff: noqa: UP031 - the seed's documents are kept verbatim, with "%s" where the seed has "..."

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from mpr import callbacks

from .conftest import free_port

SECRET = "serve-test-secret"
PASSWORD = "serve-test-password"


def _mpr(*args: str, env: dict[str, str], **kwargs) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("mpr")), *args]
    if kwargs.pop("background", False):
        return subprocess.Popen(cmd, env=env, start_new_session=True, **kwargs)
    return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=120)


@pytest.fixture(params=["worker"])
def served(request, tmp_path, clips):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPR_", "MEDIA_"))}
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "sample.mp4").write_bytes(clips["video"].read_bytes())
    port = free_port()
    env.update(
        MEDIA_IN=str(tmp_path / "in"),
        MEDIA_OUT=str(tmp_path / "out"),
        MPR_VAR_DIR=str(tmp_path / "var"),
        MPR_DATABASE_URL=f"sqlite://{tmp_path / 'var' / 'mpr.db'}",
        MPR_GRPC_PORT=str(free_port()),
        MPR_ADMIN_PASSWORD=PASSWORD,
        MPR_CALLBACK_SECRET=SECRET,
    )
    _mpr("migrate", env=env)
    log = (tmp_path / "serve.log").open("w")
    extra = ["--no-worker"] if request.param == "no-worker" else []
    proc = _mpr("serve", "--port", str(port), *extra, env=env, background=True, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # a process start-up on a busy CI machine
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "mpr serve not ready: " + (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.1)
        yield url, tmp_path
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _gql(client: httpx.Client, query: str) -> dict:
    r = client.post("/graphql", json={"query": query})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body.get("errors"), body
    return body["data"]


def test_a_new_user_session_against_mpr_serve(served):
    url, _ = served
    with httpx.Client(base_url=url, timeout=30) as c:
        assert "graphiql" in c.get("/graphql", headers={"Accept": "text/html"}).text.lower()
        assert _gql(c, "mutation { scanMediaFolder { found registered skipped } }")["scanMediaFolder"] == {
            "found": 1, "registered": 1, "skipped": 0,
        }  # fmt: skip
        asset = _gql(c, 'query { assets(status: "ready") { id filename duration } }')["assets"][0]
        presets = _gql(c, "query { presets { id name container videoCodec } }")["presets"]
        preset = next(p["id"] for p in presets if p["name"] == "h264-720p")
        assert _gql(c, "query { systemStatus { status version } }")["systemStatus"]["status"] == "ok"
        job = _gql(c, 'mutation { createJob(input: { sourceAssetId: "%s", presetId: "%s" }) { id status } }'
                   % (asset["id"], preset))["createJob"]  # fmt: skip
        for _ in range(600):
            status = _gql(c, 'query { jobs(status: "completed") { id status progress } }')["jobs"]
            if status:
                break
            time.sleep(0.1)
        assert status == [{"id": job["id"], "status": "completed", "progress": 100.0}]
        assert _gql(c, 'mutation { updateAsset(id: "%s", input: { comments: "ok" }) { id comments } }'
                    % asset["id"])["updateAsset"]["comments"] == "ok"  # fmt: skip
        second = _gql(c, 'mutation { createJob(input: { sourceAssetId: "%s", presetId: "%s" }) { id status } }'
                      % (asset["id"], preset))["createJob"]  # fmt: skip
        cancelled = c.post("/graphql", json={"query": 'mutation { cancelJob(id: "%s") { id status } }' % second["id"]})
        retried = c.post("/graphql", json={"query": 'mutation { retryJob(id: "%s") { id status } }' % second["id"]})
        assert "errors" not in retried.json() or "errors" in cancelled.json()  # it may have finished first

        # the admin
        page = c.get("/admin/login")
        token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text).group(1)
        r = c.post("/admin/login", data={"password": PASSWORD, "next": "/admin", "_csrf_token": token})
        assert r.status_code == 303
        assert "System status" in c.get("/admin").text


@pytest.mark.parametrize("served", ["no-worker"], indirect=True)
def test_signed_callback_completes_a_job_unsigned_gets_401(served):
    url, tmp = served
    with httpx.Client(base_url=url, timeout=30) as c:
        _gql(c, "mutation { scanMediaFolder { found registered skipped } }")
        asset = _gql(c, 'query { assets(status: "ready") { id } }')["assets"][0]["id"]
        # no worker: the job waits in PENDING as it would for a remote executor
        job = _gql(c, 'mutation { createJob(input: { sourceAssetId: "%s" }) { id status outputPath } }' % asset)
        job = job["createJob"]
        assert job["status"] == "pending"
        (tmp / "out" / job["outputPath"]).write_bytes((tmp / "in" / "sample.mp4").read_bytes())
        body = json.dumps({"status": "completed", "output_key": job["outputPath"], "metrics": {"seconds": 2}}).encode()
        r = c.post(f"/api/jobs/{job['id']}/callback", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 401
        assert _gql(c, 'query { job(id: "%s") { status } }' % job["id"])["job"]["status"] == "pending"
        sent = int(time.time())
        r = c.post(
            f"/api/jobs/{uuid.uuid4()}/callback", content=body, headers=callbacks.sign_headers(body, SECRET, sent)
        )
        assert r.status_code == 404
        headers = callbacks.sign_headers(body, SECRET, sent - 1)  # not that one's signature, whenever a second ticks
        r = c.post(f"/api/jobs/{job['id']}/callback", content=body, headers=headers)
        assert r.status_code == 200 and r.json() == {"ok": True, "changed": True, "status": "completed"}
        done = _gql(c, 'query { job(id: "%s") { status output { path size duration } } }' % job["id"])["job"]
        assert done["status"] == "completed" and done["output"]["size"] > 0 and done["output"]["duration"] > 2.5
        r = c.post(f"/api/jobs/{job['id']}/callback", content=body, headers=headers)
        assert r.status_code == 401  # the same signature again is a replay


def test_mpr_serve_trusts_forwarded_headers_from_the_local_proxy_only(served):
    """Behind nginx on the same machine: https from X-Forwarded-Proto makes the admin cookie Secure,
    and the login rate limit counts the forwarded client, not the proxy's address."""
    url, _ = served
    with httpx.Client(base_url=url, timeout=30) as c:
        page = c.get("/admin/login")
        token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text).group(1)
        proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
        r = c.post("/admin/login", data={"password": PASSWORD, "next": "/admin", "_csrf_token": token},
                   headers=proxied)  # fmt: skip
        assert r.status_code == 303
        session_cookie = [h for h in r.headers.get_list("set-cookie") if "csrf" not in h.split("=")[0]]
        assert session_cookie and all("secure" in h.lower() for h in session_cookie), session_cookie
        # five wrong passwords from one forwarded client lock that client, not everyone behind the proxy
        for _ in range(6):
            c.post("/admin/login", data={"password": "wrong", "next": "/admin", "_csrf_token": token},
                   headers={"X-Forwarded-For": "198.51.100.9"})  # fmt: skip
        locked = c.post("/admin/login", data={"password": PASSWORD, "next": "/admin", "_csrf_token": token},
                        headers={"X-Forwarded-For": "198.51.100.9"})  # fmt: skip
        assert locked.status_code != 303
        other = c.post("/admin/login", data={"password": PASSWORD, "next": "/admin", "_csrf_token": token},
                       headers={"X-Forwarded-For": "198.51.100.10"})  # fmt: skip
        assert other.status_code == 303
