"""Chunked parallel encoding (SPEC §7).

- :mod:`mpr.chunker.plan` — ``plan_chunks(source, chunk_seconds) -> list[Chunk]`` (keyframe aligned)
- :mod:`mpr.chunker.encode` — ``encode_chunk``, ``encode_audio`` (no database: cloud workers call them)
- :mod:`mpr.chunker.concat` — ``concat(chunk_paths, audio_path, output, preset)`` (stream copy)
- :mod:`mpr.chunker.pipeline` — ``Pipeline`` and ``run_chunked`` (threads, JobChunk rows, events)
"""

from __future__ import annotations

from mpr.chunker.concat import concat
from mpr.chunker.encode import encode_audio, encode_chunk
from mpr.chunker.plan import Chunk, plan_chunks

__all__ = ["Chunk", "concat", "encode_audio", "encode_chunk", "plan_chunks"]
