"""Presets: the value type plugins register, validation, and syncing into the database."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """An encoding recipe as shipped by a plugin (and as snapshotted into a job).

    ``video_codec``/``audio_codec``: an ffmpeg encoder name, ``"copy"``, or
    None to drop that stream. ``extra`` holds only whitelisted options
    (see :data:`EXTRA_OPTIONS`), never raw ffmpeg arguments.
    """

    name: str
    container: str
    description: str = ""
    video_codec: str | None = None
    video_bitrate: str | None = None
    crf: int | None = None
    speed_preset: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    audio_codec: str | None = None
    audio_bitrate: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The preset as a JSON-safe dict (what ``TranscodeJob.preset_snapshot`` stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        """Build from a dict (a snapshot or a model's values); unknown keys are ignored."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
