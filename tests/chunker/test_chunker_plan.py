"""Chunk planning: cuts only at source keyframes, every frame in exactly one chunk."""

from __future__ import annotations

import itertools

import av
import pytest

from mpr.chunker.plan import Chunk, index_video, plan_chunks
from mpr.errors import ProbeError


def keyframes(path) -> list[float]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return sorted(round(float(p.pts * v.time_base), 6) for p in c.demux(v) if p.pts is not None and p.is_keyframe)


def test_cuts_fall_on_source_keyframes_and_cover_every_frame(sources):
    plan = plan_chunks(sources["normal"], 1.0)
    idx = index_video(sources["normal"])
    assert len(plan) == 4
    assert [c.index for c in plan] == list(range(len(plan)))
    keys = keyframes(sources["normal"])
    for c in plan[1:]:
        assert round(c.start, 6) in keys
    for a, b in itertools.pairwise(plan):
        assert a.end == b.start
    assert plan[0].start == 0.0
    assert plan[-1].end == pytest.approx(4.0, abs=1e-6)
    assert sum(c.frames for c in plan) == len(idx.frame_us) == 100


def test_sparse_keyframes_make_longer_chunks(sources):
    plan = plan_chunks(sources["sparse"], 1.0)
    assert [round(c.start, 3) for c in plan] == [0.0, 2.4, 4.8][: len(plan)]
    # the 0.2 s tail after the keyframe at 4.8 s is merged into the chunk before
    assert [c.frames for c in plan] == [60, 65]


def test_source_shorter_than_a_chunk_is_one_chunk(sources):
    plan = plan_chunks(sources["short"], 10.0)
    assert plan == [Chunk(index=0, start=0.0, end=plan[0].end, frames=15)]
    assert plan[0].end == pytest.approx(0.6, abs=1e-6)


def test_audio_only_is_not_chunked(sources):
    assert plan_chunks(sources["audio"], 1.0) == []


def test_vfr_frame_counts_follow_timestamps(sources):
    plan = plan_chunks(sources["vfr"], 1.0)
    idx = index_video(sources["vfr"])
    assert sum(c.frames for c in plan) == len(idx.frame_us)
    assert len(idx.frame_us) < 100  # frames were dropped: the rate is variable


def test_chunk_round_trips_as_dict():
    c = Chunk(index=3, start=1.334667, end=2.669333, frames=40)
    assert Chunk.from_dict(c.to_dict()) == c
    assert c.duration == pytest.approx(1.334666)


def test_unreadable_source_raises_probe_error(clips):
    with pytest.raises(ProbeError):
        plan_chunks(clips["garbage"], 1.0)
