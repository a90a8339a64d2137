"""With MPR_API_TOKEN set, the UIs say clearly what is missing and work once the token is saved."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_token_needed_message_then_saved_token_is_used(page, token_server):
    page.goto(token_server.url + "/")
    # the live stream is refused without the token, and the page says why
    expect(page.locator(".queue .live-error")).to_contain_text(re.compile("token", re.IGNORECASE), timeout=15_000)
    page.get_by_role("button", name="Scan media folder").click()
    expect(page.get_by_role("alert")).to_contain_text(re.compile("Bearer|token", re.IGNORECASE))

    page.get_by_role("button", name="Settings").click()
    page.get_by_label("API token").fill("ui-test-token")
    page.get_by_role("button", name="Save token").click()
    page.reload()
    expect(page.locator(".queue .live")).to_have_attribute("data-state", "live", timeout=15_000)
    page.get_by_role("button", name="Scan media folder").click()
    expect(page.get_by_test_id("scan-result")).to_contain_text("Found 0 · registered 0 · skipped 0")
    expect(page.get_by_role("alert")).to_have_count(0)

    # a wrong token is refused with a message, not silently
    page.evaluate("localStorage.setItem('mpr.apiToken', 'wrong')")
    page.reload()
    page.get_by_role("button", name="Scan media folder").click()
    expect(page.get_by_role("alert")).to_contain_text(re.compile("Bearer|token", re.IGNORECASE))
