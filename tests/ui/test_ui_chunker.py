"""Chunker UI (/chunker/) end to end: a chunked job watched live over gRPC-Web, through a
connection drop, in Debian's Chromium against a real `mpr serve`."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from tests.ui.helpers import REALTIME, SCREENSHOTS, place_clip, wait_until

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def clip_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ui-chunker-clips")


def stats(page) -> dict[str, int]:
    el = page.get_by_test_id("stream-stats")
    return {
        k: int(el.get_attribute(f"data-{k}") or 0) for k in ("received", "last-seq", "reconnects", "gaps", "duplicates")
    }


def logged_sequences(page) -> list[int]:
    return sorted(
        int(s) for s in page.locator(".eventlog tr[data-seq]").evaluate_all("rows => rows.map(r => r.dataset.seq)")
    )


def test_chunked_job_every_chunk_done_and_stream_resumes_without_gap(page, browser, ui_server, proxy, clip_cache):
    # encoded at native speed: the job runs 12 s (6 chunks) on any machine, so it is mid-flight at the drop
    clip = place_clip(ui_server.media_in, clip_cache, f"chunky-{REALTIME}", seconds=12.0, size="640x360", gop=25)
    ui_server.graphql("mutation { scanMediaFolder { found registered skipped } }")

    # everything goes through a proxy whose connections the test can cut
    page.goto(proxy.url + "/chunker/")
    page.get_by_label("Asset").select_option(label=clip.name)
    page.get_by_label("Preset").select_option(label="h264-1080p (mp4)")
    page.get_by_label("Chunk length (seconds)").fill("2")
    page.get_by_label("Workers").fill("2")
    page.get_by_role("button", name="Start chunked job").click()
    page.wait_for_url(re.compile(r"/chunker/\?job="))
    job_id = parse_qs(urlparse(page.url).query)["job"][0]
    pipeline = page.locator(f'.pipeline[data-job-id="{job_id}"]')

    # mid-job: the first chunk is done, the job still runs -> cut every connection
    expect(page.locator('.chunkmap [data-state="done"]').first).to_be_attached(timeout=90_000)
    assert pipeline.get_attribute("data-status") == "processing", "job finished before the drop"
    before = stats(page)
    assert proxy.drop_all() > 0
    wait_until(lambda: stats(page)["reconnects"] >= 1, timeout=15, message="the UI to notice the drop")

    # back live after the drop: the screenshot shows the job mid-flight (lanes, running chunks)
    expect(page.locator('.live[data-state="live"]')).to_be_attached(timeout=15_000)
    shot = pipeline.get_attribute("data-status") == "processing"
    if shot:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "chunker.png"))

    expect(pipeline).to_have_attribute("data-status", "completed", timeout=180_000)
    expect(page.locator('.live[data-state="ended"]')).to_be_attached(timeout=10_000)
    after = stats(page)
    assert after["reconnects"] >= 1
    assert after["received"] > before["received"]
    assert after["gaps"] == 0 and after["duplicates"] == 0, after
    assert after["received"] == after["last-seq"], after  # 1, 2, 3, ... with nothing missing

    # every planned chunk turned done; one lane per worker
    planned = ui_server.graphql(f'{{ job(id: "{job_id}") {{ chunkWorkers chunks {{ index status }} }} }}')["job"]
    assert len(planned["chunks"]) >= 6
    assert all(c["status"] == "done" for c in planned["chunks"])
    blocks = page.locator(".chunkmap .chunk")
    expect(blocks).to_have_count(len(planned["chunks"]))
    expect(page.locator('.chunkmap .chunk[data-state="done"]')).to_have_count(len(planned["chunks"]))
    expect(page.get_by_test_id("chunks-done")).to_have_text(f"{len(planned['chunks'])} / {len(planned['chunks'])}")
    lanes = page.locator(".lane[data-worker]:not([data-worker=''])")
    assert 1 <= lanes.count() <= 2
    expect(page.locator(".lane .block")).to_have_count(len(planned["chunks"]))
    expect(page.get_by_role("progressbar", name="Overall progress")).to_have_attribute("aria-valuenow", "100")
    assert page.locator(".spark polyline.spark-speed").get_attribute("points")
    if not shot:
        page.screenshot(path=str(SCREENSHOTS / "chunker.png"))

    # a second viewer opening the job by URL replays the same events: same sequence numbers
    other = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    try:
        other.goto(f"{ui_server.url}/chunker/?job={job_id}")
        expect(other.locator(f'.pipeline[data-job-id="{job_id}"]')).to_have_attribute("data-status", "completed")
        wait_until(lambda: stats(other)["received"] == after["received"], timeout=15, message="replay")
        assert stats(other)["reconnects"] == 0
        assert logged_sequences(other) == logged_sequences(page)
        expect(other.locator('.chunkmap .chunk[data-state="done"]')).to_have_count(len(planned["chunks"]))
    finally:
        other.context.close()


def test_open_unknown_job_shows_clear_error(page, ui_server):
    page.goto(ui_server.url + "/chunker/?job=not-a-job")
    expect(page.get_by_role("alert")).to_contain_text(re.compile("not a valid job id|not found", re.IGNORECASE))


@pytest.mark.parametrize("path", ["/", "/chunker/"])
def test_narrow_window_has_no_horizontal_scroll_and_labelled_controls(browser, ui_server, path):
    context = browser.new_context(viewport={"width": 390, "height": 800})
    try:
        pg = context.new_page()
        pg.goto(ui_server.url + path)
        expect(pg.locator("h2").first).to_be_visible()
        pg.wait_for_timeout(500)
        assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        # every form control has an accessible name
        unnamed = pg.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea, button')]
                 .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                               && !(el.textContent || '').trim())
                 .map(el => el.outerHTML)"""
        )
        assert unnamed == []
        # keyboard: Tab reaches the main navigation and a focused link is visibly outlined
        pg.keyboard.press("Tab")
        assert pg.evaluate("document.activeElement && document.activeElement.tagName") in ("A", "BUTTON")
    finally:
        context.close()
