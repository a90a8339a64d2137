"""The /admin views: disabled without a password, login with CSRF and rate limit, lists, edits, actions."""

from __future__ import annotations

import re

import pytest

from mpr.models import JobStatus, MediaAsset, TranscodeJob, TranscodePreset

from .conftest import make_asset, make_job

PASSWORD = "correct horse battery staple"


def _csrf(html: str) -> str:
    match = re.search(r'name="_csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


async def _login(api, password: str = PASSWORD):
    page = await api.http.get("/admin/login")
    assert page.status_code == 200
    return await api.http.post(
        "/admin/login", data={"password": password, "next": "/admin/jobs", "_csrf_token": _csrf(page.text)}
    )


@pytest.fixture
async def admin(start_api):
    return await start_api(MPR_ADMIN_PASSWORD=PASSWORD)


async def test_admin_disabled_without_password(api):
    r = await api.http.get("/admin")
    assert r.status_code == 403 and "MPR_ADMIN_PASSWORD" in r.text
    r = await api.http.get("/admin/login")
    assert r.status_code == 403


async def test_login_flow_sets_a_safe_session_cookie(admin):
    r = await admin.http.get("/admin/jobs")
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/login?next=")
    r = await _login(admin)
    assert r.status_code == 303 and r.headers["location"] == "/admin/jobs"
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("mpr_admin="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax") and "Path=/admin" in cookie
    r = await admin.http.get("/admin/jobs")
    assert r.status_code == 200 and "<h1>Jobs</h1>" in r.text
    page = await admin.http.get("/admin")
    assert "System status" in page.text and "ffmpeg" in page.text and "local" in page.text
    r = await admin.http.post("/admin/logout", data={"_csrf_token": _csrf(page.text)})
    assert r.status_code == 303
    assert (await admin.http.get("/admin/jobs")).status_code == 303


async def test_login_without_csrf_token_is_refused(admin):
    await admin.http.get("/admin/login")  # gets the CSRF cookie, but the form field is missing
    r = await admin.http.post("/admin/login", data={"password": PASSWORD})
    assert r.status_code == 403
    assert "mpr_admin" not in r.headers.get("set-cookie", "")


async def test_wrong_password_then_rate_limit(admin):
    for _ in range(5):
        r = await _login(admin, "wrong")
        assert r.status_code == 401 and "Wrong password" in r.text
    r = await _login(admin, PASSWORD)  # even the right password waits now
    assert r.status_code == 429


async def test_open_redirect_after_login_is_prevented(admin):
    page = await admin.http.get("/admin/login")
    r = await admin.http.post(
        "/admin/login", data={"password": PASSWORD, "next": "https://evil.example/", "_csrf_token": _csrf(page.text)}
    )
    assert r.headers["location"] == "/admin"


async def test_lists_filters_and_edits(admin):
    a = await make_asset("clips/alpha.mp4")
    await make_asset("clips/beta.mp4", status="error", error="bad file")
    running = await make_job(a, status="processing", executor="local")
    failed = await make_job(a, status="failed", error="boom")
    assert (await _login(admin)).status_code == 303

    r = await admin.http.get("/admin/assets", params={"status": "error"})
    assert "beta.mp4" in r.text and "alpha.mp4" not in r.text
    r = await admin.http.get("/admin/assets", params={"q": "ALPHA"})
    assert "alpha.mp4" in r.text and "beta.mp4" not in r.text
    r = await admin.http.get("/admin/jobs", params={"status": "failed"})
    assert str(failed.id)[:8] in r.text and str(running.id)[:8] not in r.text

    page = await admin.http.get(f"/admin/assets/{a.id}")
    r = await admin.http.post(
        f"/admin/assets/{a.id}", data={"comments": "<b>good</b>", "_csrf_token": _csrf(page.text)}
    )
    assert r.status_code == 303
    assert (await MediaAsset.get(id=a.id)).comments == "<b>good</b>"
    page = await admin.http.get(f"/admin/assets/{a.id}")
    assert "&lt;b&gt;good&lt;/b&gt;" in page.text  # autoescaped

    page = await admin.http.get(f"/admin/jobs/{running.id}")
    r = await admin.http.post(f"/admin/jobs/{running.id}/cancel", data={"_csrf_token": _csrf(page.text)})
    assert r.status_code == 303 and "Job+cancelled" in r.headers["location"]
    assert (await TranscodeJob.get(id=running.id)).status is JobStatus.CANCELLED
    r = await admin.http.post(f"/admin/jobs/{running.id}/cancel", data={"_csrf_token": _csrf(page.text)})
    assert "err=" in r.headers["location"]  # illegal transition shown as a message

    r = await admin.http.get("/admin/chunks")
    assert r.status_code == 200 and "<h1>Chunks</h1>" in r.text


async def test_create_and_edit_presets(admin):
    assert (await _login(admin)).status_code == 303
    page = await admin.http.get("/admin/presets/new")
    form = {
        "name": "admin-tiny",
        "container": "mp4",
        "video_codec": "libx264",
        "crf": "30",
        "width": "320",
        "audio_codec": "aac",
        "audio_bitrate": "96k",
        "_csrf_token": _csrf(page.text),
    }
    r = await admin.http.post("/admin/presets/new", data=form)
    assert r.status_code == 303, r.text
    preset = await TranscodePreset.get(name="admin-tiny")
    assert preset.crf == 30 and preset.source == "user"
    page = await admin.http.get(f"/admin/presets/{preset.id}")
    r = await admin.http.post(f"/admin/presets/{preset.id}", data={"crf": "bad", "_csrf_token": _csrf(page.text)})
    assert r.status_code == 200 and "crf must be a whole number" in r.text
    r = await admin.http.post(f"/admin/presets/{preset.id}", data={"crf": "25", "_csrf_token": _csrf(page.text)})
    assert r.status_code == 303 and (await TranscodePreset.get(id=preset.id)).crf == 25
    r = await admin.http.get("/admin/presets", params={"q": "tiny"})
    assert "admin-tiny" in r.text
