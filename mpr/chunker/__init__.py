"""Chunked parallel encoding (SPEC §7).

- :mod:`mpr.chunker.plan` — ``plan_chunks(source, chunk_seconds) -> list[Chunk]`` (keyframe aligned)
- :mod:`mpr.chunker.encode` — ``encode_chunk``, ``encode_audio`` (no database: cloud workers call them)
- :mod:`mpr.chunker.concat` — ``concat(chunk_paths, audio_path, output, preset)`` (stream copy);
  ``placement(chunk_paths)`` gives its ``durations``/``video_start`` for a trimmed job's chunks
- :mod:`mpr.chunker.pipeline` — ``Pipeline`` and ``run_chunked`` (threads, JobChunk rows, events)
"""

from __future__ import annotations

from mpr.chunker.concat import concat, placement
from mpr.chunker.encode import encode_audio, encode_chunk
from mpr.chunker.plan import Chunk, plan_chunks

__all__ = ["Chunk", "concat", "encode_audio", "encode_chunk", "placement", "plan_chunks"]
