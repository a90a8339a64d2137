"""With MPR_API_TOKEN set, reads need it too: GraphQL queries, /media/* and thumbnails (signed URLs
for the browser's <video>/<img>); MPR_OPEN_READS=1 brings back open reads. Over real HTTP."""

from __future__ import annotations

import time
import urllib.parse

import httpx
import pytest
from mpr_storage_s3.testing import moto_server, s3_bucket  # noqa: F401  (fixtures)

from mpr.api.auth import sign_url, signature_ok
from mpr.models import JobStatus
from mpr.settings import Settings

from .conftest import make_asset, make_job, put_clip

TOKEN = "read-token-Qw3-secret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ASSETS = "{ assets { id path url thumbnailUrl(t: 1.0, w: 160) } }"


def _auth_error(body: dict) -> str:
    assert body.get("data") is None, body
    error = body["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED", error
    return error["message"]


def _with(url: str, **params: str) -> str:
    """``url`` with query parameters replaced (or added)."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update(params)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _without(url: str, *names: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k not in names]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


async def test_queries_need_the_token_like_mutations(start_api):
    api = await start_api(MPR_API_TOKEN=TOKEN)
    asset = await make_asset()
    mutation = f'mutation {{ updateAsset(id: "{asset.id}", input: {{ comments: "x" }}) {{ comments }} }}'
    refused_mutation = (await api.http.post("/graphql", json={"query": mutation})).json()
    for query in (
        '{ assets(status: "ready") { id path } }',
        f'{{ asset(id: "{asset.id}") {{ filename }} }}',
        "{ jobs { id } presets { name } }",
        "{ systemStatus { status version } }",  # reveals versions: closed too
        "query Named { assetCount }",
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = await api.http.post("/graphql", json={"query": query}, headers=headers)
            assert r.status_code == 200, r.text  # the same as a refused mutation: a GraphQL error
            assert "Authorization: Bearer" in _auth_error(r.json()), query
            assert "a.mp4" not in r.text and asset.filename not in r.text
        assert await api.ok(query, token=TOKEN), query
    assert _auth_error(refused_mutation) == refused_mutation["errors"][0]["message"]
    assert refused_mutation["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    # GET /graphql?query=... is no way around it
    r = await api.http.get("/graphql", params={"query": "{ assets { path } }"}, headers={"Accept": "application/json"})
    assert "a.mp4" not in r.text
    # introspection alone stays open (GraphiQL's docs; the schema is no secret); data next to it is not
    schema = await api.gql("{ __schema { queryType { name } } }")
    assert schema["data"]["__schema"]["queryType"]["name"] == "Query"
    _auth_error(await api.gql("{ __typename assets { path } }"))
    # health checks stay open for load balancers
    assert (await api.http.get("/healthz")).status_code == 200
    assert (await api.http.get("/readyz")).status_code == 200


async def test_open_reads_brings_back_the_old_behaviour(start_api, media, clips):
    api = await start_api(MPR_API_TOKEN=TOKEN, MPR_OPEN_READS="1")
    data = put_clip(media, clips["video"], "open.mp4").read_bytes()
    asset = await make_asset("open.mp4", duration=3.0)
    listed = (await api.ok(ASSETS))["assets"]
    assert listed[0]["url"] == "/media/in/open.mp4" and "sig=" not in listed[0]["thumbnailUrl"]
    assert (await api.ok("{ systemStatus { status } }"))["systemStatus"]["status"]
    r = await api.http.get("/media/in/open.mp4", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == data[:100]
    r = await api.http.get(f"/api/assets/{asset.id}/thumbnail", params={"t": 1.0, "w": 160})
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    # mutations still need the token
    doc = f'mutation {{ updateAsset(id: "{asset.id}", input: {{ comments: "x" }}) {{ comments }} }}'
    assert "Authorization: Bearer" in _auth_error(await api.gql(doc))


async def test_signed_media_url_from_graphql_plays_with_range_and_head(start_api, media, clips):
    api = await start_api(MPR_API_TOKEN=TOKEN)
    data = put_clip(media, clips["video"], "dir/my clip.mp4").read_bytes()
    await make_asset("dir/my clip.mp4", duration=3.0)
    url = (await api.ok(ASSETS, token=TOKEN))["assets"][0]["url"]
    path, _, query = url.partition("?")
    assert path == "/media/in/dir/my%20clip.mp4"
    params = dict(urllib.parse.parse_qsl(query))
    assert set(params) == {"exp", "sig"} and TOKEN not in url
    assert int(params["exp"]) >= time.time() + 6 * 3600 - 60  # MPR_MEDIA_URL_SECONDS default: 6 h

    r = await api.http.get(url)
    assert r.status_code == 200 and r.content == data
    r = await api.http.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    head = await api.http.head(url, headers={"Range": "bytes=100-199"})
    assert head.status_code == 206 and head.content == b"" and head.headers["content-length"] == "100"
    # the bearer header works without a signature (curl, scripts)
    r = await api.http.get(path, headers={**BEARER, "Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == data[:10]
    # two reads of the list give the same URL (a playing <video> is not reloaded by a refresh)
    assert (await api.ok(ASSETS, token=TOKEN))["assets"][0]["url"] == url


async def test_media_without_a_valid_signature_is_401_and_sends_no_data(start_api, media, clips):
    api = await start_api(MPR_API_TOKEN=TOKEN)
    put_clip(media, clips["video"], "a.mp4")
    put_clip(media, clips["video"], "b.mp4")
    (media["out"] / "a.mp4").write_bytes(b"output-bytes")
    await make_asset("a.mp4", duration=3.0)
    await make_asset("b.mp4", duration=3.0)
    urls = {a["path"]: a["url"] for a in (await api.ok(ASSETS, token=TOKEN))["assets"]}
    good = urls["a.mp4"]
    sig = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(good).query))["sig"]
    expired_settings = Settings(api_token=TOKEN, media_url_seconds=60)
    expired = sign_url(expired_settings, "/media/in/a.mp4", now=time.time() - 3 * 3600)
    other_token = sign_url(Settings(api_token="another-token"), "/media/in/a.mp4")
    tampered = sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")
    bad = {
        "missing sig and exp": "/media/in/a.mp4",
        "missing sig": _without(good, "sig"),
        "missing exp": _without(good, "exp"),
        "tampered sig": _with(good, sig=tampered),
        "later exp": _with(good, exp=str(int(time.time()) + 10 * 24 * 3600)),
        "other path, same sig": good.replace("/media/in/a.mp4", "/media/in/b.mp4"),
        "output of the same name": good.replace("/media/in/", "/media/out/"),
        "expired": expired,
        "another token's key": other_token,
        "token as sig": _with(good, sig=TOKEN),
        "not a number": _with(good, exp="soon"),
    }
    for why, url in bad.items():
        for headers in ({}, {"Range": "bytes=0-99"}, {"Authorization": "Bearer wrong"}):
            r = await api.http.get(url, headers=headers)
            assert r.status_code == 401, (why, headers, r.status_code)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "bytes" not in r.headers.get("content-range", "") and len(r.content) < 300, why
            head = await api.http.head(url)
            assert head.status_code == 401 and head.content == b"", why
    # a missing file: 401 without the token (nothing revealed), 404 with it
    assert (await api.http.get("/media/in/nope.mp4")).status_code == 401
    assert (await api.http.get("/media/in/nope.mp4", headers=BEARER)).status_code == 404
    assert (await api.http.get(good)).status_code == 200  # the real one still works


async def test_job_output_url_is_signed(start_api, media):
    api = await start_api(MPR_API_TOKEN=TOKEN)
    (media["out"] / "done.webm").write_bytes(b"webm-output")
    job = await make_job(await make_asset(), status=JobStatus.COMPLETED, output_path="done.webm")
    url = (await api.ok(f'{{ job(id: "{job.id}") {{ output {{ url }} }} }}', token=TOKEN))["job"]["output"]["url"]
    assert url.startswith("/media/out/done.webm?exp=")
    r = await api.http.get(url)
    assert r.status_code == 200 and r.content == b"webm-output"
    assert (await api.http.get("/media/out/done.webm")).status_code == 401


async def test_thumbnails_take_a_signed_url_or_the_token(start_api, media, clips):
    api = await start_api(MPR_API_TOKEN=TOKEN)
    put_clip(media, clips["video"], "thumb.mp4")
    asset = await make_asset("thumb.mp4", duration=3.0)
    other = await make_asset("other.mp4", duration=3.0)
    url = {a["path"]: a["thumbnailUrl"] for a in (await api.ok(ASSETS, token=TOKEN))["assets"]}["thumb.mp4"]
    assert url.startswith(f"/api/assets/{asset.id}/thumbnail?") and "sig=" in url and "t=1.0" in url
    r = await api.http.get(url)
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    # the signature covers the path: the UI picks other frames and sizes with the same URL
    r = await api.http.get(_with(url, t="2.0", w="96"))
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    head = await api.http.head(url)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"] == "image/jpeg"
    plain = f"/api/assets/{asset.id}/thumbnail?t=1.0&w=160"
    assert (await api.http.get(plain, headers=BEARER)).status_code == 200
    sig = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["sig"]
    for bad in (
        plain,
        _without(url, "sig"),
        _with(url, sig=sig[::-1]),
        url.replace(str(asset.id), str(other.id)),
        sign_url(Settings(api_token=TOKEN, media_url_seconds=60), f"/api/assets/{asset.id}/thumbnail", now=0),
        f"/api/assets/{asset.id}/thumbnail?t=1.0&w=160&exp=99999999999&sig={TOKEN}",
    ):
        r, head = await api.http.get(bad), await api.http.head(bad)
        assert r.status_code == head.status_code == 401, (bad, r.status_code, head.status_code)
        assert r.headers["content-type"].startswith("text/plain") and r.content[:2] != b"\xff\xd8"
        assert head.content == b""
    # an unknown asset is not revealed without the token
    assert (await api.http.get("/api/assets/nope/thumbnail")).status_code == 401


async def test_remote_storage_checks_auth_before_redirecting(start_api, s3_bucket, moto_server):  # noqa: F811
    api = await start_api(MPR_API_TOKEN=TOKEN, MEDIA_OUT=f"s3://{s3_bucket}/out/")
    moto_server.client("s3").put_object(Bucket=s3_bucket, Key="out/clip.mp4", Body=b"remote-bytes")
    for method in ("GET", "HEAD"):
        r = await api.http.request(method, "/media/out/clip.mp4")
        assert r.status_code == 401 and "location" not in r.headers, method
        r = await api.http.request(method, "/media/out/clip.mp4", headers=BEARER)
        assert r.status_code == 302 and "Signature" in r.headers["location"], method
    signed = sign_url(api.settings, "/media/out/clip.mp4")
    assert (await api.http.get(signed)).status_code == 302


def test_signatures_are_bound_to_path_expiry_and_token():
    settings = Settings(api_token=TOKEN)
    url = sign_url(settings, "/media/in/a b.mp4", "/media/in/a%20b.mp4", now=1_000_000)
    query = dict(urllib.parse.parse_qsl(url.partition("?")[2]))
    exp, sig = query["exp"], query["sig"]
    assert int(exp) >= 1_000_000 + settings.media_url_seconds and TOKEN not in sig
    assert signature_ok(settings, "/media/in/a b.mp4", exp, sig, now=1_000_000)
    assert signature_ok(settings, "/media/in/a b.mp4", exp, sig, now=int(exp))
    assert not signature_ok(settings, "/media/in/a b.mp4", exp, sig, now=int(exp) + 1)
    assert not signature_ok(settings, "/media/in/a%20b.mp4", exp, sig, now=1_000_000)
    assert not signature_ok(settings, "/media/in/a b.mp4", str(int(exp) + 1), sig, now=1_000_000)
    assert not signature_ok(Settings(api_token="other"), "/media/in/a b.mp4", exp, sig, now=1_000_000)
    for junk in ("", "é", "\x00", "-1", "1e9", " 1"):
        assert not signature_ok(settings, "/media/in/a b.mp4", junk, sig, now=0)
    # no token, or open reads: URLs stay plain
    assert sign_url(Settings(), "/media/in/a.mp4") == "/media/in/a.mp4"
    assert sign_url(Settings(api_token=TOKEN, open_reads=True), "/media/in/a.mp4") == "/media/in/a.mp4"


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("true", True), ("0", False), ("", False), ("off", False)])
def test_open_reads_and_url_lifetime_settings(raw, value):
    from mpr.errors import ConfigError

    settings = Settings.from_env({"MPR_OPEN_READS": raw, "MPR_MEDIA_URL_SECONDS": "600"})
    assert settings.open_reads is value and settings.media_url_seconds == 600
    with pytest.raises(ConfigError, match="MPR_OPEN_READS"):
        Settings.from_env({"MPR_OPEN_READS": "maybe"})
    with pytest.raises(ConfigError, match="MPR_MEDIA_URL_SECONDS"):
        Settings.from_env({"MPR_MEDIA_URL_SECONDS": "5"})


async def test_admin_media_links_are_signed(start_api, media, clips):
    """The admin (its own password) links to media with signed URLs, so the links work with a token set."""
    import html
    import re

    password = "admin-pass-for-links"
    api = await start_api(MPR_API_TOKEN=TOKEN, MPR_ADMIN_PASSWORD=password)
    data = put_clip(media, clips["video"], "linked.mp4").read_bytes()
    asset = await make_asset("linked.mp4", duration=3.0)
    login = await api.http.get("/admin/login")
    csrf = re.search(r'name="_csrf_token" value="([^"]+)"', login.text).group(1)
    r = await api.http.post("/admin/login", data={"password": password, "next": "/admin", "_csrf_token": csrf})
    assert r.status_code == 303
    page = await api.http.get(f"/admin/assets/{asset.id}")
    href = html.unescape(re.search(r'href="(/media/in/linked\.mp4[^"]*)"', page.text).group(1))
    assert "sig=" in href and TOKEN not in page.text
    async with httpx.AsyncClient(base_url=api.url) as stranger:  # no admin cookie: the signature is enough
        r = await stranger.get(href, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == data[:10]
