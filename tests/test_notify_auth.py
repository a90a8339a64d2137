"""MPR_NOTIFY_URL with credentials (``https://user:password@host/...``): sent as basic auth, never logged."""

from __future__ import annotations

import asyncio
import base64
import logging

from mpr.notify import Notifier
from mpr.settings import Settings
from tests.test_notify import receivers  # noqa: F401  (the real HTTP receiver fixture)

PASSWORD = "s:cret/pw"  # percent-encoded in the URL


async def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_logged(receivers, caplog) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    receiver = receivers()
    url = receiver.url.replace("http://", "http://alice:s%3Acret%2Fpw@")
    settings = Settings.from_env({"MPR_NOTIFY_URL": url})
    assert settings.notify_urls == (url,)  # accepted at start-up: so it must work
    notifier = Notifier(settings.notify_urls, attempts=1, backoff=0.0)
    notifier.submit({"event": "job.completed", "job": {"id": "j1"}}, "j1")
    assert await asyncio.to_thread(notifier.flush, 60)
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["path"] == "/hook?token=abc"
    assert request["headers"]["authorization"] == "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    # a receiver that is down: the warning names the origin only
    down = Notifier(("http://alice:s%3Acret%2Fpw@127.0.0.1:9/hook",), attempts=1, backoff=0.0)
    down.submit({"event": "job.failed"}, "j2")
    assert await asyncio.to_thread(down.flush, 60)
    assert "failed after 1 attempts" in caplog.text
    assert "cret" not in caplog.text and "alice" not in caplog.text
    assert all("cret" not in str(v) for v in settings.redacted().values())
