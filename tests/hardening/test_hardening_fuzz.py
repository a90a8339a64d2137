"""GraphQL fuzzing with schemathesis against the running app, and query-size limits.

schemathesis reads the schema by introspection and generates valid documents
for every query and mutation field (with random arguments). Every response
must be a GraphQL answer (never a 500, never a traceback), and a request the
server rejects (``errors`` and no data) must leave the database unchanged.
"""

from __future__ import annotations

import asyncio
import json
import time

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from .conftest import db_digest, put

pytestmark = pytest.mark.timeout(240)

MAX_EXAMPLES = 30  # per operation (SQLite; a third on PostgreSQL): ~540 + ~180 requests, ~25 s together
LEAKS = ("Traceback", 'File "/', "tortoise.", "sqlite3.", "asyncpg", "Exception:")


def _fuzz(base_url: str, db_file, report: list[str], token: str | None = None, examples: int = MAX_EXAMPLES) -> int:
    """Run schemathesis over every operation (in a thread: its HTTP client is synchronous). Returns #requests."""
    schema = schemathesis.graphql.from_url(f"{base_url}/graphql", timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    calls = 0
    last = [db_digest(db_file)]  # requests are sequential: the state after one is the state before the next
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
        def run(case) -> None:
            nonlocal calls
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            calls += 1
            text = response.text
            where = f"{operation.label}: {case.body!r}"[:400]  # noqa: B023 - run() is called inside the loop
            assert response.status_code < 500, f"{response.status_code} for {where}\n{text[:500]}"
            for leak in LEAKS:
                assert leak not in text, f"{leak!r} leaked for {where}\n{text[:500]}"
            body = response.json()
            assert "data" in body or "errors" in body, where
            errors = body.get("errors") or []
            for error in errors:
                assert error.get("message"), where
            data = body.get("data")
            rejected = errors and (data is None or all(v is None for v in (data or {}).values()))
            now = db_digest(db_file)
            if rejected:
                assert now == last[0], f"rejected request changed the database: {where}\n{text[:300]}"
            last[0] = now
            if errors and "internal error" in text:
                report.append(f"{where} -> {text[:300]}")

        run()
    return calls


async def _seed(api, media, clips) -> None:
    """Some real rows so ids, filters and nested fields have something to hit."""
    put(media, clips["video"], "seed.mp4")
    put(media, clips["garbage"], "bad.mp4")
    await api.ok("mutation { scanMediaFolder { found registered } }")


async def test_schemathesis_finds_no_500_no_traceback_and_rejected_requests_change_nothing(
    serve_any_db, db, media, clips
):
    api = await serve_any_db()
    await _seed(api, media, clips)
    report: list[str] = []
    started = time.monotonic()
    target = api.settings.database_url if db == "postgres" else media["var"] / "mpr.db"
    # PostgreSQL: fewer examples (same generator, derandomized) to keep the directory fast; SQLite gets the full run
    examples = MAX_EXAMPLES if db == "sqlite" else MAX_EXAMPLES // 3
    calls = await asyncio.to_thread(_fuzz, api.url, target, report, None, examples)
    assert calls >= 10 * examples, calls
    # "internal error" is the masked form of an unexpected exception: a bug even when no traceback leaks
    assert not report, "\n".join(report)
    # the app still serves normal requests afterwards
    assert (await api.ok("{ systemStatus { status } }"))["systemStatus"]["status"]
    print(f"schemathesis ({db}): {calls} requests in {time.monotonic() - started:.1f}s")


async def test_with_a_token_every_fuzzed_mutation_without_it_is_refused_and_changes_nothing(serve, media, clips):
    api = await serve(MPR_API_TOKEN="fuzz-token-123456")
    schema = await asyncio.to_thread(schemathesis.graphql.from_url, f"{api.url}/graphql", timeout=30)
    db_file = media["var"] / "mpr.db"
    before = db_digest(db_file)
    mutations = [r.ok() for r in schema.get_all_operations() if r.ok().label.startswith("Mutation.")]
    assert len(mutations) >= 8, [m.label for m in mutations]

    def run_all() -> list[dict]:
        bodies = []
        for op in mutations:
            found = []

            @given(case=op.as_strategy())
            @settings(
                max_examples=1,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                phases=[hypothesis.Phase.generate],
            )
            def one(case) -> None:
                found.append(case.call(base_url=api.url, timeout=30))  # noqa: B023 - one() runs inside the loop

            one()
            bodies += [r.json() for r in found]
        return bodies

    bodies = await asyncio.to_thread(run_all)
    assert bodies
    for body in bodies:
        assert body.get("errors"), body
        assert any(
            "token" in e["message"].lower() or "authorization" in e["message"].lower() for e in body["errors"]
        ), body
    assert db_digest(db_file) == before


async def test_deep_nesting_is_refused_and_introspection_still_works(serve):
    api = await serve()
    inner = "id"
    for _ in range(30):  # job → sourceAsset → jobs → sourceAsset → ...
        inner = f"sourceAsset {{ jobs {{ {inner} }} }}"
    started = time.monotonic()
    body = await api.gql(f"{{ jobs {{ {inner} }} }}")
    assert body.get("errors") and "depth" in body["errors"][0]["message"].lower(), body
    assert time.monotonic() - started < 5
    full = await api.gql(
        "query { __schema { queryType { name } mutationType { name } types { name kind fields { name type { name kind "
        "ofType { name kind ofType { name kind ofType { name kind } } } } } } } }"
    )
    assert not full.get("errors"), full
    assert full["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_alias_flood_and_huge_documents_do_not_exhaust_the_server(serve):
    api = await serve()
    # 5,000 aliased copies of a list field in one document: the server answers quickly (refusal or result)
    flood = "{ " + " ".join(f"a{i}: presets {{ id name }}" for i in range(5000)) + " }"
    started = time.monotonic()
    r = await api.http.post("/graphql", json={"query": flood})
    elapsed = time.monotonic() - started
    assert r.status_code < 500, r.text[:300]
    assert elapsed < 20, f"an alias flood took {elapsed:.1f}s"
    # a 2 MB document of garbage is refused without a traceback
    r = await api.http.post("/graphql", json={"query": "{" * 2_000_000})
    assert r.status_code < 500
    assert "Traceback" not in r.text
    # batched/array bodies and non-JSON bodies are clear 4xx answers
    for raw in (json.dumps([{"query": "{ presets { id } }"}] * 3), "not json", ""):
        r = await api.http.post("/graphql", content=raw, headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500 or (r.status_code == 200 and r.json().get("errors")), (
            raw[:20],
            r.status_code,
        )
    assert (await api.ok("{ systemStatus { status } }"))["systemStatus"]["status"]


async def test_nul_bytes_and_odd_strings_in_every_text_argument_are_clean_errors_or_results(
    serve_any_db, db, media, clips
):
    """PostgreSQL refuses NUL in text; SQLite does not: both must answer without an internal error."""
    api = await serve_any_db()
    await _seed(api, media, clips)
    asset = (await api.ok("{ assets { id } }"))["assets"][0]["id"]
    target = api.settings.database_url if db == "postgres" else media["var"] / "mpr.db"
    for value in ["\u0000", "a\u0000b", "\ud7ff\ue000", "%", "_", "\\", "' OR 1=1 --", "x" * 20000]:
        documents = [
            ("query($v: String) { assets(search: $v) { id } }", False),
            ("query($v: String) { jobs(search: $v) { id } }", False),
            ("query($v: String) { presets(search: $v) { id } }", False),
            ("query($v: String) { jobs(executor: $v) { id } }", False),
            ("query($v: String) { assets(status: $v) { id } }", False),
            ("query($v: ID!) { job(id: $v) { id } }", False),
            ('mutation($v: String!) { updateAsset(id: "' + asset + '", input: {comments: $v}) { id } }', True),
            ('mutation($v: String!) { createPreset(input: {name: $v, container: "mp4"}) { id } }', True),
        ]
        for doc, _mutation in documents:
            before = await asyncio.to_thread(db_digest, target)
            body = await api.gql(doc, {"v": value})
            text = json.dumps(body)
            assert "internal error" not in text and "Traceback" not in text, (
                db,
                doc[:40],
                repr(value[:10]),
                text[:300],
            )
            if body.get("errors"):
                assert await asyncio.to_thread(db_digest, target) == before, (doc[:40], repr(value[:10]))
