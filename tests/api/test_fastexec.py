"""The fast execution path (mpr/api/fastexec.py) gives exactly what graphql-core's normal path gives.

Every document runs twice, through :class:`FastExecutionContext` and through
Strawberry's stock execution context, and the data and the errors (message,
path, locations) must be equal: on a small schema built to hit each branch
(nulls, non-null violations, values a scalar rejects, unexpected Python
types, prefetched objects, arguments, resolvers, async fields), and on MPR's
own schema over a database holding every kind of row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
import strawberry
from strawberry.types import Info

from mpr.api.fastexec import FastExecutionContext, prefetchable

from .conftest import make_asset, make_job

# ------------------------------------------------------------------ a schema with every branch


@strawberry.type
class Leaf:
    name: str
    count: int | None
    must: int

    @strawberry.field
    async def later(self) -> str:
        return self.name.upper()


@strawberry.type
class Row:
    id: strawberry.ID
    text: str
    maybe: str | None
    number: int
    ratio: float | None
    flag: bool
    when: dt.datetime
    blob: strawberry.scalars.JSON
    tags: list[str]
    prefetched: strawberry.Private[dict[str, Any]] = dataclasses.field(default_factory=dict)

    @strawberry.field
    def computed(self, times: int = 2) -> str:
        return self.text * times

    @prefetchable()
    def leaf(self) -> Leaf | None:
        if "leaf" in self.prefetched:
            return self.prefetched["leaf"]
        return Leaf(name=f"loaded-{self.text}", count=None, must=1)

    @prefetchable()
    def strict_leaf(self) -> Leaf:
        return self.prefetched.get("strictLeaf") or Leaf(name="default", count=0, must=0)


WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _row(i: int, **changes: Any) -> Row:
    row = Row(
        id=strawberry.ID(f"r{i}"), text=f"t{i}", maybe=None if i % 2 else f"m{i}", number=i, ratio=i / 3,
        flag=bool(i % 2), when=WHEN, blob={"i": i, "nested": [1, None]}, tags=["a", "b"],
    )  # fmt: skip
    for name, value in changes.items():
        setattr(row, name, value)
    return row


def _rows() -> list[Row]:
    rows = [_row(i) for i in range(6)]
    rows[1].prefetched["leaf"] = Leaf(name="pre", count=3, must=2)
    rows[2].prefetched["leaf"] = None  # prefetched "no such object"
    rows[3].prefetched["leaf"] = Leaf(name="bad", count=None, must=None)  # type: ignore[arg-type]
    rows[4].prefetched["leaf"] = "not a Leaf"  # the fast path must not vouch for it
    rows[5].prefetched["strictLeaf"] = Leaf(name="broken", count=1, must=None)  # type: ignore[arg-type]
    return rows


def _broken_rows() -> list[Row]:
    return [
        _row(10, maybe=None, text=None),  # null in a non-null field
        _row(11, number=2**40),  # outside GraphQL's Int
        _row(12, number="12"),  # wrong Python type: graphql-core's coercion decides
        _row(13, ratio=float("inf")),  # not a finite Float
        _row(14, flag="yes"),
        _row(15, when="not a datetime"),
        _row(16, number=True),
    ]


@strawberry.type
class BranchQuery:
    @strawberry.field
    def rows(self) -> list[Row]:
        return _rows()

    @strawberry.field
    def broken(self) -> list[Row | None]:
        return _broken_rows()

    @strawberry.field
    async def async_rows(self) -> list[Row]:
        return _rows()


def _schemas() -> tuple[strawberry.Schema, strawberry.Schema]:
    return (
        strawberry.Schema(query=BranchQuery, execution_context_class=FastExecutionContext),
        strawberry.Schema(query=BranchQuery),
    )


DOCUMENTS = [
    "{ rows { id text maybe number ratio flag when blob tags } }",
    "{ rows { a: id b: text c: text id } }",
    "{ rows { __typename id leaf { __typename name count must later } } }",
    "{ rows { id computed c3: computed(times: 3) } }",
    "{ asyncRows { id leaf { name later } } }",
    "{ rows { ...R } } fragment R on Row { id ... on Row { text leaf { ...L } } } fragment L on Leaf { name }",
    "{ rows { id strictLeaf { name must } } }",
    "{ broken { id text } }",
    "{ broken { id number } }",
    "{ broken { id ratio } }",
    "{ broken { flag } }",
    "{ broken { when } }",
    "{ broken { id maybe leaf { name } } }",
    "query($yes: Boolean!) { rows { id text @include(if: $yes) maybe @skip(if: $yes) } }",
]


def _shape(result: Any) -> tuple[Any, list[Any]]:
    errors = sorted(
        ((e.message, tuple(e.path or ()), tuple((loc.line, loc.column) for loc in e.locations or ())) for e in result.errors or []),
        key=repr,
    )  # fmt: skip
    return result.data, errors


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("yes", [True, False])
async def test_fast_path_equals_graphql_core_on_every_branch(document: str, yes: bool) -> None:
    fast, stock = _schemas()
    variables = {"yes": yes} if "$yes" in document else None
    got = _shape(await fast.execute(document, variable_values=variables))
    want = _shape(await stock.execute(document, variable_values=variables))
    assert got == want
    assert got[0] is not None or got[1]  # every document returns data or errors


async def test_error_documents_really_produce_errors() -> None:
    """The comparison above is only meaningful if the broken rows do hit the error branches."""
    fast, _ = _schemas()
    result = await fast.execute("{ broken { id text number ratio flag when } }")
    paths = {tuple(e.path) for e in result.errors}
    assert ("broken", 0, "text") in paths  # null in String!
    assert ("broken", 1, "number") in paths  # 2**40 is not an Int
    assert ("broken", 3, "ratio") in paths  # inf is not a Float
    assert result.data["broken"][0] is None and result.data["broken"][1] is None
    strict = await fast.execute("{ rows { id strictLeaf { must } } }")
    assert strict.data is None and strict.errors[0].path == ["rows", 5, "strictLeaf", "must"]


def test_fast_path_is_taken() -> None:
    """Plain scalar fields and prefetched objects skip graphql-core's per-field machinery.

    Guards the speed-up itself: if Strawberry stopped marking basic fields
    (``_is_default``) every field would quietly take the slow path again.
    """
    calls: list[str] = []

    class Counting(FastExecutionContext):
        def execute_field(self, parent_type: Any, source: Any, details: Any, *args: Any) -> Any:
            calls.append(details[0].node.name.value)
            return super().execute_field(parent_type, source, details, *args)

    schema = strawberry.Schema(query=BranchQuery, execution_context_class=Counting)
    result = schema.execute_sync("{ rows { id text number when leaf { name count } } }")
    assert [e.path for e in result.errors] == [["rows", 4, "leaf", "name"]]  # row 4's "leaf" is a str
    # the root field; rows 0 and 5, whose leaf was not prefetched; row 4, whose prefetched value is not
    # a Leaf, and then its "name" (a str has none: the error comes from graphql-core's own path)
    assert sorted(calls) == ["leaf", "leaf", "leaf", "name", "rows"]


def test_fast_path_is_off_when_an_extension_hooks_resolving() -> None:
    """A schema extension with a ``resolve`` hook must see every field, so the fast path steps aside."""
    seen: list[str] = []

    class Spy(strawberry.extensions.SchemaExtension):
        def resolve(self, _next: Any, root: Any, info: Info, *args: Any, **kwargs: Any) -> Any:
            seen.append(info.field_name)
            return _next(root, info, *args, **kwargs)

    schema = strawberry.Schema(query=BranchQuery, extensions=[Spy], execution_context_class=FastExecutionContext)
    result = schema.execute_sync("{ rows { id text } }")
    assert not result.errors
    assert seen.count("id") == 6 and seen.count("text") == 6


# ------------------------------------------------------------------ MPR's own schema


MPR_DOCUMENTS = [
    "{ jobs { id status progress speed eta error attempts priority executor externalId trimStart trimEnd chunked"
    " chunkSeconds chunkWorkers worker outputPath sourcePath sourceAssetId presetId presetSnapshot metrics createdAt"
    " startedAt finishedAt output { path size duration url } } }",
    "{ jobs { id sourceAsset { id path filename kind size status error duration container videoCodec audioCodec"
    " width height fps bitrate sampleRate channels comments createdAt updatedAt url thumbnailUrl } preset { id name"
    " container videoCodec builtin extra } chunks { index start end status worker } } }",
    "{ assets { id path filename kind size status duration fps bitrate comments url thumbnailUrl(t: 1) jobs { id"
    " status sourceAsset { filename } } } }",
    "{ j: jobs(limit: 2) { x: id s: sourceAsset { f: filename p: path } } jobCount assetCount }",
    '{ jobs(status: "completed") { ...J } } fragment J on Job { id output { url } sourceAsset { ...A } }'
    " fragment A on Asset { id filename }",
    "{ presets { id name description container videoCodec crf width height fps audioCodec extra source modified } }",
    "{ jobs { id sourceSize sizeRatio } assets { jobs { sourceSize sizeRatio } }"
    " statistics { jobsTotal bytesSaved jobsByStatus { status count } } }",
]


async def test_mpr_schema_fast_and_stock_give_the_same_answers(db) -> None:
    from mpr.api import graphql as g
    from mpr.models import JobChunk, TranscodePreset
    from mpr.presets import sync_presets
    from mpr.settings import get_settings

    await sync_presets()
    preset = await TranscodePreset.filter(name="h264-720p").first()
    video = await make_asset("library/a.mp4", comments="first", width=640, height=360, fps=25.0, bitrate=123456)
    audio = await make_asset("music/b.mp3", kind="audio", video_codec=None, status="error", error="bad file")
    gone = await make_asset("library/gone.mp4")
    await make_job(video, status="completed", output_size=999, output_duration=2.5, preset=preset)
    await make_job(video, status="failed", error="boom", preset=preset, metrics={"frames": 75, "fps": 200.5})
    chunked = await make_job(audio, status="processing", progress=42.5, chunked=True, chunk_seconds=2.0)
    await JobChunk.create(job=chunked, index=0, start=0.0, end=2.0, status="done", worker="w1")
    await JobChunk.create(job=chunked, index=1, start=2.0, end=4.0, status="running")
    await make_job(gone, status="pending", preset=None, trim_start=1.0, trim_end=2.0)
    await gone.delete()  # a job whose asset is gone: sourceAsset null

    fast, stock = g.schema, g.make_schema(execution_context_class=None)
    context = g.context_getter_factory(get_settings)
    for document in MPR_DOCUMENTS:
        got = await fast.execute(document, context_value=await context())
        want = await stock.execute(document, context_value=await context())
        assert not got.errors, got.errors
        assert got.data == want.data, document
    listed = (await fast.execute(MPR_DOCUMENTS[1], context_value=await context())).data["jobs"]
    assert len(listed) == 4
    assert sum(1 for j in listed if j["sourceAsset"] is None) == 1
    assert {j["preset"]["name"] for j in listed if j["preset"]} == {"h264-720p"}
