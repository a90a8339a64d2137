"""With MPR_API_TOKEN set, the UIs say clearly what is missing and work once the token is saved
(reads too: the library, the player and thumbnails from signed URLs)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.ui.helpers import place_clip

pytestmark = pytest.mark.browser


def test_token_needed_message_then_saved_token_is_used(page, token_server):
    page.goto(token_server.url + "/")
    # the live stream is refused without the token, the page says why, and it does not retry
    live = page.locator(".queue .live")
    expect(live).to_have_attribute("data-state", "unauthenticated", timeout=15_000)
    expect(live).to_have_attribute("title", re.compile("token", re.IGNORECASE))
    expect(live).to_contain_text("needs token")
    expect(page.locator(".queue .live-error")).to_have_count(0)
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


@pytest.fixture(scope="module")
def clip_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ui-auth-clips")


def test_prompt_for_the_token_then_library_loads_and_plays_from_signed_urls(page, token_server, clip_cache):
    clip = place_clip(token_server.media_in, clip_cache, "signed", seconds=3.0)
    token_server.graphql("mutation { scanMediaFolder { found registered skipped } }")

    # without the token: a clear prompt, no broken page, nothing of the library
    page.goto(token_server.url + "/")
    prompt = page.get_by_test_id("auth-prompt")
    expect(prompt).to_contain_text("needs its API token")
    expect(page.locator("button.asset")).to_have_count(0)
    expect(page.get_by_role("alert")).to_have_count(0)
    # the library and the jobs are locked, not empty; the job stream waits for the token
    library, queue = page.locator(".panel.library"), page.locator(".panel.queue")
    expect(library).to_contain_text("Enter the API token to see the library.")
    expect(queue).to_contain_text("Enter the API token to see the jobs.")
    expect(queue.locator(".live")).to_have_attribute("data-state", "unauthenticated", timeout=15_000)
    for text in ("No assets yet", "No jobs yet", "Loading assets", "reconnecting"):
        expect(page.get_by_text(text)).to_have_count(0)

    # the prompt opens Settings; saving the token loads the library without a reload
    prompt.get_by_role("button", name="Enter API token").click()
    token_field = page.get_by_label("API token")
    expect(token_field).to_be_focused()
    token_field.fill("ui-test-token")
    page.get_by_role("button", name="Save token").click()
    expect(prompt).to_have_count(0)
    asset = page.locator(f'button.asset[data-asset="{clip.name}"]')
    expect(asset).to_be_visible()
    expect(page.locator(".queue .live")).to_have_attribute("data-state", "live", timeout=15_000)
    expect(queue).to_contain_text("No jobs yet")  # now known to be empty
    expect(page.get_by_text(re.compile("Enter the API token to see"))).to_have_count(0)

    # the player streams from the signed URL the API gave (Range: 206), and plays
    with page.expect_response(lambda r: "/media/in/" in r.url and "sig=" in r.url and r.status == 206):
        asset.click()
    page.wait_for_function("() => document.querySelector('video').readyState >= 1")
    src = page.evaluate("document.querySelector('video').currentSrc")
    assert f"/media/in/{clip.name}?exp=" in src and "&sig=" in src and "ui-test-token" not in src
    page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('video').currentTime > 0.2")
    # thumbnails too (an <img> cannot send the header either)
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('.strip img')];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0 && i.src.includes('sig=')); }"
    )
    # the same file without the signature (or with it on another path) is refused
    plain = src.split("?")[0]
    assert page.request.get(plain).status == 401
    assert page.request.get(plain.replace(clip.name, "other.mp4") + "?" + src.split("?")[1]).status == 401


def test_chunker_prompts_for_the_token_and_loads_after_it_is_saved(page, token_server, clip_cache):
    clip = place_clip(token_server.media_in, clip_cache, "chunky", seconds=2.0)
    token_server.graphql("mutation { scanMediaFolder { found registered skipped } }")
    page.goto(token_server.url + "/chunker/")
    prompt = page.get_by_test_id("auth-prompt")
    expect(prompt).to_contain_text("needs its API token")
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.get_by_text("Enter the API token to see the ready videos.")).to_be_visible()
    expect(page.get_by_text("No ready video assets")).to_have_count(0)
    prompt.get_by_role("button", name="Enter API token").click()
    page.get_by_label("API token").fill("ui-test-token")
    page.get_by_role("button", name="Save token").click()
    expect(prompt).to_have_count(0)
    expect(page.get_by_label("Asset").locator("option", has_text=clip.name)).to_have_count(1)
    expect(page.get_by_label("Preset").locator("option")).not_to_have_count(0)
