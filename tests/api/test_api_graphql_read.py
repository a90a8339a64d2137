"""GraphQL queries over HTTP: the seed's query documents, filters, pagination, errors, depth limit."""

from __future__ import annotations

import logging

from .conftest import make_asset, make_job

SEED_QUERIES = {
    "assets": 'query { assets(status: "ready") { id filename duration } }',
    "jobs": 'query { jobs(status: "processing") { id status progress } }',
    "presets": "query { presets { id name container videoCodec } }",
    "systemStatus": "query { systemStatus { status version } }",
}


async def test_seed_queries_work_unchanged(api):
    ready = await make_asset("ready.mp4")
    await make_asset("pending.mp4", status="pending")
    running = await make_job(ready, status="processing", progress=42.0)
    await make_job(ready, status="pending")

    data = await api.ok(SEED_QUERIES["assets"])
    assert data["assets"] == [{"id": str(ready.id), "filename": "ready.mp4", "duration": 3.0}]

    data = await api.ok(SEED_QUERIES["jobs"])
    assert data["jobs"] == [{"id": str(running.id), "status": "processing", "progress": 42.0}]

    data = await api.ok(SEED_QUERIES["presets"])
    names = {p["name"] for p in data["presets"]}
    assert len(names) >= 5  # built-in presets synced at start-up
    assert all(p["container"] for p in data["presets"])

    data = await api.ok(SEED_QUERIES["systemStatus"])
    assert data["systemStatus"]["status"] == "ok"
    assert data["systemStatus"]["version"]


async def test_status_arguments_accept_any_case_and_reject_unknown(api):
    await make_asset("x.mp4")
    assert len((await api.ok('{ assets(status: "READY") { id } }'))["assets"]) == 1
    body = await api.gql('{ assets(status: "done") { id } }')
    assert body["data"] is None
    assert "unknown asset status 'done'" in body["errors"][0]["message"]
    assert "pending, ready, error" in body["errors"][0]["message"]


async def test_filters_search_and_pagination(api):
    for i in range(5):
        await make_asset(f"clips/video{i}.mp4")
    await make_asset("music/song.mp3", kind="audio", video_codec=None)
    data = await api.ok('{ assets(kind: "audio") { filename } assetCount(kind: "audio") }')
    assert data == {"assets": [{"filename": "song.mp3"}], "assetCount": 1}
    data = await api.ok('{ assets(search: "VIDEO3") { filename } }')
    assert [a["filename"] for a in data["assets"]] == ["video3.mp4"]
    page1 = (await api.ok("{ assets(limit: 2) { id path } }"))["assets"]
    page2 = (await api.ok("{ assets(limit: 2, offset: 2) { id path } }"))["assets"]
    assert [a["path"] for a in page1 + page2] == [f"clips/video{i}.mp4" for i in range(4)]
    cursor = (await api.ok("query($a: ID) { assets(first: 2, after: $a) { path } }", {"a": page1[-1]["id"]}))["assets"]
    assert [a["path"] for a in cursor] == ["clips/video2.mp4", "clips/video3.mp4"]


async def test_job_pagination_with_cursor_is_newest_first(api):
    asset = await make_asset()
    jobs = [await make_job(asset) for _ in range(5)]
    everything = [j["id"] for j in (await api.ok("{ jobs { id } }"))["jobs"]]
    assert set(everything) == {str(j.id) for j in jobs}
    first = (await api.ok("{ jobs(first: 2) { id } }"))["jobs"]
    rest = (await api.ok("query($a: ID) { jobs(first: 10, after: $a) { id } }", {"a": first[-1]["id"]}))["jobs"]
    assert [j["id"] for j in first + rest] == everything


async def test_asset_and_job_by_id_with_nested_fields(api):
    asset = await make_asset("nested.mp4", comments="hello")
    job = await make_job(asset, status="completed", output_size=1234, output_duration=2.5, chunked=True)
    from mpr.models import JobChunk

    for i in range(3):
        await JobChunk.create(job=job, index=i, start=i * 1.0, end=i + 1.0, status="done")
    data = await api.ok(
        """query($id: ID!, $a: ID!) {
          job(id: $id) { id status chunks { index status } output { path size url duration }
                         sourceAsset { id filename comments jobs { id } } }
          asset(id: $a) { filename url thumbnailUrl }
        }""",
        {"id": str(job.id), "a": str(asset.id)},
    )
    j = data["job"]
    assert [c["index"] for c in j["chunks"]] == [0, 1, 2]
    assert j["output"] == {
        "path": job.output_path,
        "size": 1234.0,
        "url": f"/media/out/{job.output_path}",
        "duration": 2.5,
    }
    assert j["sourceAsset"]["comments"] == "hello"
    assert j["sourceAsset"]["jobs"] == [{"id": str(job.id)}]
    assert data["asset"]["url"] == "/media/in/nested.mp4"
    assert data["asset"]["thumbnailUrl"] == f"/api/assets/{asset.id}/thumbnail"


async def test_unknown_and_malformed_ids_are_clear_errors(api):
    body = await api.gql('{ job(id: "not-a-uuid") { id } }')
    assert body["errors"][0]["message"] == "'not-a-uuid' is not a valid job id (expected a UUID)"
    body = await api.gql('{ asset(id: "00000000-0000-0000-0000-000000000000") { id } }')
    assert body["errors"][0]["message"] == "asset 00000000-0000-0000-0000-000000000000 does not exist"
    assert "traceback" not in str(body).lower()


async def test_unexpected_exception_is_masked_with_request_id(api, monkeypatch, caplog):
    from mpr.api import graphql

    async def boom(*args, **kwargs):
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(graphql, "run_checks_for_status", boom, raising=False)
    monkeypatch.setattr("mpr.api.health.run_checks", boom)
    with caplog.at_level(logging.ERROR, logger="mpr.api"):
        body = await api.gql("{ systemStatus { status } }")
    message = body["errors"][0]["message"]
    assert message.startswith("internal error (request id ")
    assert "secret" not in str(body) and "Traceback" not in str(body)
    request_id = message.split("request id ")[1].rstrip(")")
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is in the log, not the response


async def test_depth_limit_blocks_deep_queries_but_not_introspection(api):
    deep = "{ jobs { id } }"
    for _ in range(5):
        deep = deep.replace("{ id }", "{ sourceAsset { jobs { id } } }")
    body = await api.gql(deep)
    assert "exceeds maximum operation depth" in body["errors"][0]["message"]
    from graphql import get_introspection_query

    data = await api.ok(get_introspection_query())
    assert data["__schema"]["queryType"]["name"] == "Query"


async def test_graphiql_is_served_to_browsers(api):
    r = await api.http.get("/graphql", headers={"Accept": "text/html"})
    assert r.status_code == 200
    assert "graphiql" in r.text.lower()


async def test_lists_load_the_columns_fragments_ask_for(api):
    asset = await make_asset("frag.mp4", comments="via fragment")
    job = await make_job(asset, status="completed", output_size=10)
    data = await api.ok(
        "query { jobs { ...J } assets { ... on Asset { comments } } } "
        "fragment J on Job { id output { size } sourceAsset { ...A } } fragment A on Asset { filename comments }"
    )
    assert data["jobs"] == [
        {
            "id": str(job.id),
            "output": {"size": 10.0},
            "sourceAsset": {"filename": "frag.mp4", "comments": "via fragment"},
        }
    ]
    assert data["assets"] == [{"comments": "via fragment"}]


async def test_asset_search_paging_and_count_work_together(api):
    """What the Timeline library sends: server-side search + filters, pages by limit/offset, and a total."""
    for i in range(7):
        await make_asset(f"shoot/Interview-{i:02d}.mp4")
    await make_asset("shoot/interview-audio.mp3", kind="audio", video_codec=None)
    await make_asset("shoot/interview-broken.mp4", status="error")
    await make_asset("other/b-roll.mp4")
    await make_asset("other/100%_done.mp4")
    query = """query($search: String, $kind: String, $status: String, $limit: Int, $offset: Int) {
      assets(search: $search, kind: $kind, status: $status, limit: $limit, offset: $offset) { filename }
      assetCount(search: $search, kind: $kind, status: $status)
    }"""
    seen = []
    for offset in (0, 3, 6):
        data = await api.ok(
            query, {"search": "INTERVIEW-", "kind": "video", "status": "ready", "limit": 3, "offset": offset}
        )
        assert data["assetCount"] == 7
        seen += [a["filename"] for a in data["assets"]]
    assert seen == [f"Interview-{i:02d}.mp4" for i in range(7)]  # case-insensitive, ordered, no gaps or repeats

    data = await api.ok(query, {"search": "interview", "limit": 2})
    assert data["assetCount"] == 9 and len(data["assets"]) == 2  # the count ignores the page
    data = await api.ok(query, {"search": "interview", "kind": "audio"})
    assert data == {"assets": [{"filename": "interview-audio.mp3"}], "assetCount": 1}
    data = await api.ok(query, {"search": "interview", "status": "error"})
    assert data == {"assets": [{"filename": "interview-broken.mp4"}], "assetCount": 1}
    # LIKE wildcards in the search are literal characters
    data = await api.ok(query, {"search": "100%_"})
    assert data == {"assets": [{"filename": "100%_done.mp4"}], "assetCount": 1}
    data = await api.ok(query, {"search": "no such name"})
    assert data == {"assets": [], "assetCount": 0}
    # no arguments: every asset, and the seed's query is unchanged
    data = await api.ok(query, {})
    assert data["assetCount"] == 11 and len(data["assets"]) == 11


async def test_subscription_over_http_is_a_clear_error_without_traceback(api, caplog):
    job = await make_job(await make_asset())
    with caplog.at_level(logging.DEBUG, logger="mpr.api"):
        for accept in ("application/json", "multipart/mixed;subscriptionSpec=1.0, application/json"):
            r = await api.http.post(
                "/graphql",
                json={
                    "query": "subscription($id: ID) { jobEvents(jobId: $id) { sequence type } }",
                    "variables": {"id": str(job.id)},
                },
                headers={"Accept": accept},
            )
            body = r.json()
            assert body["data"] is None
            assert [e["message"] for e in body["errors"]] == [
                "subscriptions need a WebSocket (graphql-transport-ws) at /graphql"
            ]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info]
    # queries and mutations over HTTP are untouched
    assert (await api.ok("{ jobCount }"))["jobCount"] == 1
