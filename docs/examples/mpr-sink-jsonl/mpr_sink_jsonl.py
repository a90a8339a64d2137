"""An MPR event-sink plugin: every JobEvent appended to a JSON-lines file.

Configure with MPR_JSONL_EVENTS=/path/to/events.jsonl (unset: the sink is not registered).
"""

from __future__ import annotations

import json
import os
import threading

from mpr import hookimpl


class JsonlSink:
    """Appends events as one JSON object per line; safe from several threads."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    async def emit(self, event) -> None:
        line = json.dumps(event.to_dict(), sort_keys=True)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


@hookimpl
def register_event_sinks(register):
    # Plugins read their own, prefixed settings; this one is optional.
    path = os.environ.get("MPR_JSONL_EVENTS")
    if path:
        register(JsonlSink(path))
