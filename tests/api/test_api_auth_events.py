"""API token auth, the jobEvents subscription over graphql-transport-ws, the serve() bind check,
and the query count of list fields (no N+1)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import websockets

from mpr import events
from mpr.errors import ConfigError

from .conftest import make_asset, make_job

TOKEN = "t0ken-for-tests"


async def test_mutations_and_queries_need_the_token(start_api):
    api = await start_api(MPR_API_TOKEN=TOKEN)
    asset = await make_asset()
    doc = f'mutation {{ updateAsset(id: "{asset.id}", input: {{ comments: "x" }}) {{ comments }} }}'
    body = await api.gql(doc)
    assert "Authorization: Bearer" in body["errors"][0]["message"]
    body = await api.gql(doc, token="wrong")
    assert body.get("errors")
    assert (await api.ok(doc, token=TOKEN))["updateAsset"]["comments"] == "x"
    # reads too (MPR_OPEN_READS=1 opens them again: tests/api/test_api_read_auth.py)
    assert (
        "Authorization: Bearer" in (await api.gql('query { assets(status: "ready") { id } }'))["errors"][0]["message"]
    )
    assert (await api.ok('query { assets(status: "ready") { id } }', token=TOKEN))["assets"]


async def _ws(api, payload=None, token_header=None):
    headers = {"Authorization": f"Bearer {token_header}"} if token_header else None
    ws = await websockets.connect(
        api.url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"], additional_headers=headers
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert ack["type"] == "connection_ack"
    return ws


SUB = "subscription($id: ID, $after: Int!) { jobEvents(jobId: $id, afterSequence: $after) { jobId type status progress sequence } }"


async def test_job_events_subscription_streams_and_resumes(api):
    job = await make_job(await make_asset())
    await events.emit(events.JobEvent(job_id=str(job.id), type=events.STATUS, status="processing"))
    ws = await _ws(api)
    await ws.send(
        json.dumps(
            {"id": "1", "type": "subscribe", "payload": {"query": SUB, "variables": {"id": str(job.id), "after": 0}}}
        )
    )
    first = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert first["type"] == "next"
    assert first["payload"]["data"]["jobEvents"]["status"] == "processing"
    assert first["payload"]["data"]["jobEvents"]["sequence"] == 1
    await events.emit(events.JobEvent(job_id=str(job.id), type=events.PROGRESS, status="processing", progress=50.0))
    second = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert second["payload"]["data"]["jobEvents"]["progress"] == 50.0
    await ws.close()

    # reconnect after sequence 1: only the progress event comes back
    ws = await _ws(api)
    await ws.send(
        json.dumps(
            {"id": "2", "type": "subscribe", "payload": {"query": SUB, "variables": {"id": str(job.id), "after": 1}}}
        )
    )
    again = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert again["payload"]["data"]["jobEvents"]["sequence"] == 2
    await ws.close()


async def test_subscription_unknown_job_is_an_error(api):
    ws = await _ws(api)
    await ws.send(
        json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUB, "variables": {"id": "nope", "after": 0}}})
    )
    msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert msg["type"] == "error" or msg["payload"].get("errors")
    assert "not a valid job id" in json.dumps(msg)
    await ws.close()


async def test_subscription_needs_the_token(start_api):
    api = await start_api(MPR_API_TOKEN=TOKEN)
    job = await make_job(await make_asset())
    await events.emit(events.JobEvent(job_id=str(job.id), type=events.STATUS, status="processing"))
    sub = {"query": SUB, "variables": {"id": str(job.id), "after": 0}}
    ws = await _ws(api)
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": sub}))
    denied = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert "Authorization: Bearer" in json.dumps(denied)
    await ws.close()
    for kwargs in ({"payload": {"Authorization": f"Bearer {TOKEN}"}}, {"token_header": TOKEN}):
        ws = await _ws(api, **kwargs)
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": sub}))
        ok = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert ok["type"] == "next" and ok["payload"]["data"]["jobEvents"]["status"] == "processing"
        await ws.close()


def test_serve_refuses_public_bind_without_token(monkeypatch):
    from mpr.api.server import check_bind
    from mpr.settings import Settings

    with pytest.raises(ConfigError, match="MPR_API_TOKEN"):
        check_bind("0.0.0.0", Settings(), insecure=False)
    check_bind("0.0.0.0", Settings(), insecure=True)
    check_bind("0.0.0.0", Settings(api_token="x"), insecure=False)
    check_bind("127.0.0.1", Settings(), insecure=False)
    check_bind("::1", Settings(), insecure=False)
    check_bind("localhost", Settings(), insecure=False)


class _QueryCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.queries: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().lstrip().upper()
        if text.startswith(("SELECT", "INSERT", "UPDATE", "DELETE")):
            self.queries.append(text)


async def _count(api, document: str) -> int:
    logger = logging.getLogger("tortoise.db_client")
    handler = _QueryCounter()
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        await api.ok(document)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return len(handler.queries)


async def test_list_fields_use_a_fixed_number_of_queries(api):
    from mpr.models import JobChunk, TranscodePreset

    preset = await TranscodePreset.first()
    doc = "{ jobs { id status sourceAsset { filename jobs { id } } preset { name } chunks { index } output { url } } }"
    for i in range(3):
        job = await make_job(await make_asset(f"a{i}.mp4"), preset=preset)
        await JobChunk.create(job=job, index=0, start=0, end=1)
    small = await _count(api, doc)
    for i in range(3, 30):
        job = await make_job(await make_asset(f"a{i}.mp4"), preset=preset)
        await JobChunk.create(job=job, index=0, start=0, end=1)
    large = await _count(api, doc)
    assert 4 <= small == large <= 5, (small, large)  # jobs, assets, presets, chunks, asset jobs
    assert await _count(api, "{ assets { id jobs { id preset { id } } } }") <= 3
