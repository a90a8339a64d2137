"""Auth beyond tests/api: every admin page and form is gated, CSRF on every form, Secure cookies, no secret leaks.

(login flow, cookie flags, login CSRF, rate limit, token on mutations and on
the gRPC / gRPC-Web / subscription streams are in tests/api and tests/grpc.)
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3

import httpx
import pytest

from mpr.callbacks import sign_headers
from mpr.models import JobStatus, TranscodeJob, TranscodePreset

from .conftest import db_digest, put

pytestmark = pytest.mark.timeout(120)

PASSWORD = "admin-pass-Zq9!secret-value"
TOKEN = "api-token-Xy7-secret-value"
CB_SECRET = "callback-secret-Wv5-secret-value"
SECRETS = (PASSWORD, TOKEN, CB_SECRET)


def _csrf(html: str) -> str:
    match = re.search(r'name="_csrf_token" value="([^"]+)"', html)
    assert match, html[:300]
    return match.group(1)


async def _fixture_rows(media, clips):
    put(media, clips["video"], "a.mp4")
    from mpr import scan

    asset, _ = await scan.register("a.mp4")
    job = await TranscodeJob.create(
        source_asset=asset,
        source_path="a.mp4",
        output_path="o.mp4",
        executor="local",
        preset_snapshot={},
        status=JobStatus.FAILED,
        error="boom",
    )
    preset = await TranscodePreset.create(
        name="mine", container="mp4", video_codec="libx264", audio_codec="aac", source="user"
    )
    return asset, job, preset


async def test_every_admin_page_and_form_needs_a_session_and_every_form_needs_csrf(serve, media, clips):
    api = await serve(MPR_ADMIN_PASSWORD=PASSWORD)
    asset, job, preset = await _fixture_rows(media, clips)
    pages = [
        "/admin",
        "/admin/",
        "/admin/assets",
        f"/admin/assets/{asset.id}",
        "/admin/presets",
        "/admin/presets/new",
        f"/admin/presets/{preset.id}",
        "/admin/jobs",
        f"/admin/jobs/{job.id}",
        "/admin/chunks",
        "/admin/jobs?status=failed&q=%3Cscript%3E",
    ]
    forms = {
        f"/admin/assets/{asset.id}": {"comments": "pwned"},
        "/admin/presets/new": {"name": "evil", "container": "mp4", "video_codec": "libx264"},
        f"/admin/presets/{preset.id}": {"name": "renamed"},
        f"/admin/presets/{preset.id}/delete": {},
        f"/admin/jobs/{job.id}/retry": {},
        f"/admin/jobs/{job.id}/cancel": {},
        f"/admin/jobs/{job.id}/delete": {"delete_output": "1"},
        f"/admin/presets/{preset.id}/reset": {},
    }
    db_file = media["var"] / "mpr.db"
    before = db_digest(db_file)
    for page in pages:
        r = await api.http.get(page)
        assert r.status_code in (302, 303) and r.headers["location"].startswith("/admin/login"), (page, r.status_code)
    # not logged in, with a valid CSRF pair: still refused
    login_page = await api.http.get("/admin/login")
    token = _csrf(login_page.text)
    for path, data in forms.items():
        r = await api.http.post(path, data={**data, "_csrf_token": token})
        assert r.status_code in (302, 303, 401, 403), (path, r.status_code)
        if r.status_code in (302, 303):
            assert r.headers["location"].startswith("/admin/login"), (path, r.headers["location"])
    # a forged session cookie is no session
    forged = httpx.AsyncClient(base_url=api.url, cookies={"mpr_admin": "forged-session-token"})
    async with forged:
        r = await forged.get("/admin/jobs")
        assert r.status_code == 303
    assert db_digest(db_file) == before

    # logged in, but a cross-site form post without the CSRF token (or with a wrong one) is refused
    r = await api.http.post("/admin/login", data={"password": PASSWORD, "next": "/admin", "_csrf_token": token})
    assert r.status_code == 303
    for path, data in forms.items():
        for extra in ({}, {"_csrf_token": "0" * 64}):
            r = await api.http.post(path, data={**data, **extra})
            assert r.status_code == 403, (path, extra, r.status_code)
    # the same forms from another origin with no CSRF cookie at all
    async with httpx.AsyncClient(base_url=api.url, cookies={"mpr_admin": api.http.cookies.get("mpr_admin")}) as other:
        r = await other.post(f"/admin/jobs/{job.id}/retry", data={"_csrf_token": token})
        assert r.status_code == 403, r.status_code
    assert db_digest(db_file) == before
    # pages escape what they show
    r = await api.http.get("/admin/jobs?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert r.status_code == 200 and "<script>alert(1)</script>" not in r.text
    # hostile ids and parameters on the logged-in pages: clear 4xx or a page, never a 500
    for page in [
        "/admin/assets/..%2f..%2fetc%2fpasswd",
        "/admin/jobs/%00",
        "/admin/presets/" + "9" * 500,
        "/admin/jobs?page=-1",
        "/admin/jobs?page=abc",
        "/admin/jobs?status=%00",
        "/admin/assets?kind=nope",
        f"/admin/jobs/{job.id}?x=%ff%fe",
    ]:
        r = await api.http.get(page)
        assert r.status_code < 500 and "Traceback" not in r.text, (page, r.status_code)


async def test_cookies_are_secure_when_served_over_https(serve, media):
    api = await serve(MPR_ADMIN_PASSWORD=PASSWORD, MPR_PUBLIC_URL="https://mpr.example.org")
    page = await api.http.get("/admin/login", headers={"X-Forwarded-Proto": "https"})
    csrf_cookie = next(v for k, v in page.headers.multi_items() if k == "set-cookie" and v.startswith("mpr_csrf="))
    assert "Secure" in csrf_cookie and "HttpOnly" in csrf_cookie, csrf_cookie
    # httpx does not send Secure cookies over http: pass the CSRF cookie by hand, as a browser on https would
    token = _csrf(page.text)
    cookie = csrf_cookie.split(";")[0]
    r = await api.http.post(
        "/admin/login",
        data={"password": PASSWORD, "next": "/admin", "_csrf_token": token},
        headers={"Cookie": cookie, "X-Forwarded-Proto": "https"},
    )
    assert r.status_code == 303, (r.status_code, r.text[:300])
    session = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("mpr_admin="))
    assert "Secure" in session and "HttpOnly" in session and "samesite=lax" in session.lower(), session


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_no_secret_appears_in_logs_errors_responses_or_rows(serve, media, clips):
    caplog = _Keep()
    loggers = [logging.getLogger(n) for n in ("", "mpr", "uvicorn", "litestar", "strawberry", "tortoise")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(caplog)
        lg.setLevel(logging.DEBUG)
    try:
        await _leak_check(serve, media, clips, caplog)
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(caplog)
            lg.setLevel(level)


async def _leak_check(serve, media, clips, caplog) -> None:
    api = await serve(
        MPR_ADMIN_PASSWORD=PASSWORD, MPR_API_TOKEN=TOKEN, MPR_CALLBACK_SECRET=CB_SECRET, MPR_LOG_LEVEL="DEBUG"
    )
    _asset, job, _ = await _fixture_rows(media, clips)
    texts: list[str] = []

    async def keep(r: httpx.Response) -> httpx.Response:
        texts.append(r.text + json.dumps(dict(r.headers)))
        return r

    # wrong and right credentials on every door
    for token in (None, "wrong", TOKEN[:-1], TOKEN + "x", TOKEN):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        await keep(
            await api.http.post(
                "/graphql",
                headers=headers,
                json={
                    "query": "mutation($id: ID!) { retryJob(id: $id) { id status error } }",
                    "variables": {"id": str(job.id)},
                },
            )
        )
    await keep(await api.http.post("/graphql", json={"query": "{ systemStatus { status version } }"}))
    await keep(await api.http.post("/graphql", json={"query": f'{{ job(id: "{job.id}") {{ error }} }}'}))
    await keep(await api.http.post("/graphql", json={"query": "{ nope }"}))
    page = await keep(await api.http.get("/admin/login"))
    for pw in ("wrong", PASSWORD):
        await keep(
            await api.http.post(
                "/admin/login", data={"password": pw, "next": "/admin", "_csrf_token": _csrf(page.text)}
            )
        )
    await keep(await api.http.get("/admin"))
    await keep(await api.http.get("/admin/jobs"))
    await keep(await api.http.get("/readyz"))
    for secret in (CB_SECRET, "wrong"):
        body = json.dumps({"status": "failed", "error": "x"}).encode()
        await keep(
            await api.http.post(f"/api/jobs/{job.id}/callback", content=body, headers=sign_headers(body, secret))
        )
    await keep(
        await api.http.post(
            f"/api/jobs/{job.id}/callback",
            content=b"{}",
            headers={"X-MPR-Timestamp": "1", "X-MPR-Signature": f"sha256={CB_SECRET}"},
        )
    )
    from mpr.settings import get_settings

    texts.append(repr(get_settings().redacted()))
    conn = sqlite3.connect(media["var"] / "mpr.db")
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = "".join(repr(list(conn.execute(f'SELECT * FROM "{t}"'))) for t in tables)
    finally:
        conn.close()
    fmt = logging.Formatter()
    logs = "\n".join(fmt.format(r) for r in caplog.records)
    assert len(caplog.records) > 5
    for secret in SECRETS:
        for where, text in (("logs", logs), ("job rows", rows), *((f"response {i}", t) for i, t in enumerate(texts))):
            assert secret not in text, f"{secret[:8]}... leaked in {where}: {text[:300]}"
    # the right token retried the job and the rightly signed callback failed it; nothing else got through
    final = await TranscodeJob.get(id=job.id)
    assert final.status is JobStatus.FAILED and final.error == "x", (final.status, final.error)
