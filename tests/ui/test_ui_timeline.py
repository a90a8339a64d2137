"""Timeline UI (/) end to end: real `mpr serve`, real ffmpeg jobs, Debian's Chromium."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import uuid

import pytest
from playwright.sync_api import expect

from tests.ui.helpers import REALTIME, SCREENSHOTS, create_job_id, is_graphql_mutation, place_clip

pytestmark = pytest.mark.browser

FPS = 25


@pytest.fixture(scope="module")
def clip_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ui-clips")


def scan_and_select(page, server, name: str) -> None:
    page.goto(server.url + "/")
    page.get_by_role("button", name="Scan media folder").click()
    expect(page.get_by_test_id("scan-result")).to_contain_text(re.compile(r"Found \d+ · registered \d+ · skipped \d+"))
    page.locator(f'button.asset[data-asset="{name}"]').click()
    expect(page.locator("#detail-title")).to_have_text(name)


def job_row(page, job_id: str):
    return page.locator(f'li.job[data-job-id="{job_id}"]')


def record_progress(page, job_id: str) -> None:
    """Record every value the job's progress bar and status badge take (a MutationObserver)."""
    page.evaluate(
        """(id) => {
          window.__seen = {progress: [], status: []};
          const look = () => {
            const row = document.querySelector(`li.job[data-job-id="${id}"]`);
            if (!row) return;
            const bar = row.querySelector('[role=progressbar]');
            const v = Number(bar.getAttribute('aria-valuenow'));
            const s = row.dataset.status;
            const seen = window.__seen;
            if (seen.progress[seen.progress.length - 1] !== v) seen.progress.push(v);
            if (seen.status[seen.status.length - 1] !== s) seen.status.push(s);
          };
          new MutationObserver(look).observe(document.body, {subtree: true, childList: true, attributes: true});
          look();
        }""",
        job_id,
    )


def test_scan_play_seek_trim_and_transcode_to_completion(page, ui_server, clip_cache):
    clip = place_clip(ui_server.media_in, clip_cache, "timeline", seconds=4.0, gop=FPS, rate=FPS)

    page.goto(ui_server.url + "/")
    page.get_by_role("button", name="Scan media folder").click()
    result = page.get_by_test_id("scan-result")
    expect(result).to_contain_text(re.compile(r"Found [1-9]\d* · registered [1-9]\d* · skipped \d+"))

    # search and filters narrow the library
    page.get_by_label("Search").fill(clip.stem)
    expect(page.locator("button.asset")).to_have_count(1)
    page.get_by_label("Kind").select_option("audio")
    expect(page.get_by_text("No asset matches these filters.")).to_be_visible()
    page.get_by_label("Kind").select_option("video")
    page.get_by_label("Status").select_option("ready")
    expect(page.locator("button.asset")).to_have_count(1)

    # selecting the asset loads the player from /media/in with a Range request (206)
    with page.expect_response(lambda r: "/media/in/" in r.url and r.status == 206):
        page.locator(f'button.asset[data-asset="{clip.name}"]').click()
    page.wait_for_function("() => document.querySelector('video').readyState >= 1")
    assert page.evaluate("document.querySelector('video').duration") == pytest.approx(4.0, abs=0.1)

    # thumbnails come from the server (ffmpeg) and decode as images
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('.strip img')];"
        " return imgs.length === 10 && imgs.every(i => i.complete && i.naturalWidth > 0); }"
    )

    # play, then seek: the playhead readout follows the element
    page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('video').currentTime > 0.2")
    page.evaluate(
        """() => new Promise(res => { const v = document.querySelector('video'); v.pause();
           v.addEventListener('seeked', res, {once: true}); v.currentTime = 2.5; })"""
    )
    assert page.evaluate("document.querySelector('video').currentTime") == pytest.approx(2.5, abs=0.05)
    expect(page.get_by_test_id("readout-playhead")).to_contain_text("00:00:02.5")

    # drag the in handle to about a quarter of the track: the time snaps to a frame
    track = page.get_by_test_id("timeline-track").bounding_box()
    handle_in = page.get_by_test_id("handle-in").bounding_box()
    page.mouse.move(handle_in["x"] + handle_in["width"] / 2, handle_in["y"] + handle_in["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] * 0.25, track["y"] + track["height"] / 2, steps=8)
    page.mouse.up()
    trim_in = float(page.get_by_test_id("handle-in").get_attribute("aria-valuenow"))
    assert trim_in == pytest.approx(1.0, abs=0.15)
    frame_in = round(trim_in * FPS)
    assert trim_in == pytest.approx(frame_in / FPS, abs=1e-3)
    expect(page.get_by_test_id("readout-in")).to_contain_text(f"frame {frame_in}")

    # the out handle by keyboard: ten frames back from the end
    out = page.get_by_test_id("handle-out")
    out.focus()
    for _ in range(10):
        out.press("ArrowLeft")
    expect(page.get_by_test_id("readout-out")).to_have_text(re.compile(r"00:00:03\.600\s+frame 90"))
    expect(page.get_by_test_id("readout-length")).to_contain_text(f"{90 - frame_in} frames")

    # transcode the selection; watch the live progress bar reach 100% and the job complete
    page.get_by_label("Preset").select_option(label="h264-720p (mp4)")
    with page.expect_response(is_graphql_mutation("createJob")) as created:
        page.get_by_role("button", name="Transcode selection").click()
    job_id = create_job_id(created.value)
    record_progress(page, job_id)
    row = job_row(page, job_id)
    expect(row).to_have_attribute("data-status", "completed", timeout=90_000)
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(row.locator(".progress-text")).to_have_text("100%")
    seen = page.evaluate("window.__seen")
    assert seen["progress"][-1] == 100
    assert seen["progress"] == sorted(seen["progress"]), seen  # never goes backwards
    assert seen["status"][-1] == "completed"

    job = ui_server.graphql(f'{{ job(id: "{job_id}") {{ trimStart trimEnd output {{ url duration }} }} }}')["job"]
    assert job["trimStart"] == pytest.approx(trim_in, abs=1e-3)
    assert job["trimEnd"] == pytest.approx(3.6, abs=1e-3)
    assert job["output"]["duration"] == pytest.approx(3.6 - trim_in, abs=0.2)
    link = row.get_by_role("link", name="Play output")
    assert link.get_attribute("href") == job["output"]["url"]
    media = page.request.get(ui_server.url + job["output"]["url"])
    assert media.status == 200 and len(media.body()) > 1000

    # Trim: same selection, copy preset (no re-encode)
    with page.expect_response(is_graphql_mutation("createJob")) as created:
        page.get_by_role("button", name="Trim", exact=True).click()
    trim_id = create_job_id(created.value)
    trim_row = job_row(page, trim_id)
    expect(trim_row).to_have_attribute("data-status", "completed", timeout=60_000)
    expect(trim_row).to_contain_text("→ copy")
    expect(trim_row).to_contain_text(re.compile(r"trim 00:00:0\d\.\d{3}–00:00:03\.600"))

    # the queue's header shows the space the completed jobs saved, re-read when a job completed
    stats = ui_server.graphql("{ statistics { bytesSaved completedJobsCompared } }")["statistics"]
    assert stats["completedJobsCompared"] >= 2
    saved = page.get_by_test_id("space-saved")
    expect(saved).to_have_attribute("data-bytes-saved", str(int(stats["bytesSaved"])))
    shown = re.compile(
        r"Saved \d+(\.\d)? [KMG]?B \((−\d+|±0) %\)" if stats["bytesSaved"] >= 0 else r"Outputs .+ larger"
    )
    expect(saved).to_have_text(shown)


def test_cancel_running_job_and_retry_failed_job(page, ui_server, clip_cache):
    # encoded at native speed: 30 s of running job to cancel, on any machine
    long_clip = place_clip(ui_server.media_in, clip_cache, f"long-{REALTIME}", seconds=30.0, size="640x360", gop=50)
    broken = place_clip(ui_server.media_in, clip_cache, "broken", seconds=2.0)
    good_bytes = broken.read_bytes()

    scan_and_select(page, ui_server, long_clip.name)
    page.get_by_label("Preset").select_option(label="h265-1080p (mp4)")
    with page.expect_response(is_graphql_mutation("createJob")) as created:
        page.get_by_role("button", name="Transcode", exact=True).click()
    long_id = create_job_id(created.value)
    row = job_row(page, long_id)
    expect(row).to_have_attribute("data-status", "processing", timeout=30_000)
    page.wait_for_function(
        """(id) => Number(document.querySelector(`li.job[data-job-id="${id}"] [role=progressbar]`)
                  .getAttribute('aria-valuenow')) > 0""",
        arg=long_id,
        timeout=60_000,
    )
    expect(row).to_contain_text(re.compile(r"speed \d+\.\d\d×"))

    # an API error is shown as a clear message: the asset has a running job
    page.get_by_role("button", name="Delete asset").click()
    page.get_by_role("button", name="Yes, delete").click()
    expect(page.locator(".detail [role=alert]")).to_contain_text(re.compile("running|processing|active", re.IGNORECASE))

    row.get_by_role("button", name=re.compile("Cancel job")).click()
    expect(row).to_have_attribute("data-status", "cancelled", timeout=15_000)
    expect(row.get_by_role("button", name=re.compile("Retry job"))).to_be_visible()

    # a job whose source went bad after the scan fails with ffmpeg's error text
    broken.write_bytes(b"\x00garbage" * 4096)
    page.locator(f'button.asset[data-asset="{broken.name}"]').click()
    page.get_by_label("Preset").select_option(label="h264-720p (mp4)")
    with page.expect_response(is_graphql_mutation("createJob")) as created:
        page.get_by_role("button", name="Transcode", exact=True).click()
    failed_id = create_job_id(created.value)
    failed = job_row(page, failed_id)
    expect(failed).to_have_attribute("data-status", "failed", timeout=60_000)
    expect(failed.locator(".job-error")).not_to_be_empty()

    # put the good file back and retry: the same job runs again and completes
    broken.write_bytes(good_bytes)
    with page.expect_response(is_graphql_mutation("retryJob")) as retried:
        failed.get_by_role("button", name=re.compile("Retry job")).click()
    retry_id = create_job_id(retried.value)
    expect(job_row(page, retry_id)).to_have_attribute("data-status", "completed", timeout=60_000)
    expect(job_row(page, retry_id).get_by_role("link", name="Download")).to_be_visible()

    page.locator(f'button.asset[data-asset="{long_clip.name}"]').click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.strip img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    # a selection from 10 s to 20 s by keyboard (PageUp/PageDown move a handle by 10 s)
    page.get_by_test_id("handle-in").press("PageUp")
    page.get_by_test_id("handle-out").press("PageDown")
    expect(page.get_by_test_id("readout-length")).to_contain_text("00:00:10.000")
    page.evaluate(
        """() => new Promise(res => { const v = document.querySelector('video');
           v.addEventListener('seeked', res, {once: true}); v.currentTime = 12.4; })"""
    )
    page.wait_for_function("() => document.querySelector('video').readyState >= 3")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "timeline.png"))


def test_comments_token_and_delete_with_confirmation(page, ui_server, clip_cache):
    audio = place_clip(ui_server.media_in, clip_cache, "tone", suffix=".mp3", seconds=2.0, video=False)
    scan_and_select(page, ui_server, audio.name)
    expect(page.locator("audio")).to_have_count(1)
    page.wait_for_function("() => document.querySelector('audio').readyState >= 1")

    # comments are saved with updateAsset and survive a reload
    page.get_by_label("Comments").fill("take 3 — keep the intro")
    page.get_by_role("button", name="Save comments").click()
    expect(page.get_by_role("status").filter(has_text="Comments saved.")).to_be_visible()
    page.reload()
    expect(page.get_by_label("Comments")).to_have_value("take 3 — keep the intro")
    page.get_by_label("Search").fill("keep the intro")
    expect(page.locator("button.asset")).to_have_count(1)

    # a stored token is sent as Authorization: Bearer on API calls
    page.get_by_role("button", name="Settings").click()
    page.get_by_label("API token").fill("secret-token")
    page.get_by_role("button", name="Save token").click()
    with page.expect_request(lambda r: r.url.endswith("/graphql")) as req:
        page.reload()
    assert req.value.headers.get("authorization") == "Bearer secret-token"
    page.evaluate("localStorage.removeItem('mpr.apiToken')")

    # delete asks first; "Keep it" keeps it, "Yes, delete" removes it
    page.get_by_role("button", name="Delete asset").click()
    page.get_by_role("button", name="Keep it").click()
    expect(page.locator(f'button.asset[data-asset="{audio.name}"]')).to_be_visible()
    page.get_by_role("button", name="Delete asset").click()
    expect(page.get_by_role("group", name="Confirm delete")).to_contain_text(audio.name)
    page.get_by_role("button", name="Yes, delete").click()
    expect(page.locator(f'button.asset[data-asset="{audio.name}"]')).to_have_count(0)
    names = [a["filename"] for a in ui_server.graphql("{ assets { filename } }")["assets"]]
    assert audio.name not in names


def test_job_queue_catches_up_after_a_dropped_stream(page, ui_server, proxy, clip_cache):
    # encoded at native speed: the job still runs when the stream drops, on any machine
    clip = place_clip(ui_server.media_in, clip_cache, f"dropped-{REALTIME}", seconds=10.0, size="640x360", gop=25)
    scan_and_select(page, ui_server, clip.name)  # through the server, to register the clip
    page.goto(f"{proxy.url}/")
    page.locator(f'button.asset[data-asset="{clip.name}"]').click()
    expect(page.locator(".queue .live")).to_have_attribute("data-state", "live")
    page.get_by_label("Preset").select_option(label="h264-1080p (mp4)")
    with page.expect_response(is_graphql_mutation("createJob")) as created:
        page.get_by_role("button", name="Transcode", exact=True).click()
    job_id = create_job_id(created.value)
    row = job_row(page, job_id)
    expect(row).to_have_attribute("data-status", "processing", timeout=30_000)

    # every state the indicator takes is recorded: "reconnecting" may last only its 300 ms retry
    # delay, shorter than Playwright's polling gaps when the browser notices the drop late
    page.evaluate(
        """() => { window.__liveStates = []; const queue = document.querySelector('.queue');
             new MutationObserver(() => window.__liveStates.push(queue.querySelector('.live')?.dataset.state))
               .observe(queue, {subtree: true, childList: true, attributes: true, attributeFilter: ['data-state']}); }"""
    )
    assert proxy.drop_all() > 0
    page.wait_for_function("() => window.__liveStates.some(s => s === 'reconnecting' || s === 'connecting')")
    expect(page.locator(".queue .live")).to_have_attribute("data-state", "live", timeout=15_000)
    expect(row).to_have_attribute("data-status", "completed", timeout=120_000)
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")


def test_library_search_runs_on_the_server_and_pages_with_load_more(page, ui_server, clip_cache):
    tag = f"Paged{uuid.uuid4().hex[:6]}"  # mixed case: the server's search ignores case
    clips = sorted(place_clip(ui_server.media_in, clip_cache, tag, seconds=1.0).name for _ in range(5))
    ui_server.graphql("mutation { scanMediaFolder { found registered skipped } }")

    # ?pageSize=2: two assets a page, so five matching assets take three pages
    page.goto(ui_server.url + "/?pageSize=2")
    count = page.get_by_test_id("asset-count")
    expect(count).to_have_attribute("data-shown", "2")
    library_total = int(count.get_attribute("data-total"))
    assert library_total >= 5

    def library_request(offset: int):
        def match(request) -> bool:
            if not request.url.endswith("/graphql") or request.method != "POST":
                return False
            body = json.loads(request.post_data or "{}")
            wanted = {"search": tag.lower(), "limit": 2, "offset": offset}
            return "assetCount" in body.get("query", "") and wanted.items() <= body.get("variables", {}).items()

        return match

    # the search is sent to the server (with the page size), which counts the matches
    with page.expect_request(library_request(0)):
        page.get_by_label("Search").fill(tag.lower())
    expect(count).to_have_text("Showing 2 of 5 assets")
    expect(page.locator("button.asset")).to_have_count(2)

    with page.expect_request(library_request(2)):
        page.get_by_role("button", name="Load more").click()
    expect(count).to_have_text("Showing 4 of 5 assets")
    with page.expect_request(library_request(4)):
        page.get_by_role("button", name="Load more").click()
    expect(count).to_have_text("Showing 5 of 5 assets")
    expect(page.get_by_role("button", name="Load more")).to_have_count(0)
    shown = page.locator("button.asset").evaluate_all("buttons => buttons.map(b => b.dataset.asset)")
    assert shown == clips  # every match once, in path order

    # an asset from the last page opens; "Trim" says it starts at a keyframe
    page.locator(f'button.asset[data-asset="{clips[-1]}"]').click()
    expect(page.locator("#detail-title")).to_have_text(clips[-1])
    trim = page.get_by_role("button", name="Trim", exact=True)
    expect(trim).to_have_attribute("title", re.compile("previous keyframe"))
    expect(trim).to_have_accessible_description(re.compile("frame-exact cut"))

    # clearing the search asks for the first page of the whole library again
    page.get_by_label("Search").fill("")
    expect(count).to_have_text(f"Showing 2 of {library_total:,} assets")


def test_job_queue_rereads_jobs_another_process_changed_without_events(page, ui_server):
    """A job run elsewhere (no shared event bus): its row follows the database by a fallback re-read."""
    job_id = str(uuid.uuid4())
    now = dt.datetime.now(dt.UTC).isoformat(sep=" ")
    with sqlite3.connect(ui_server.var / "mpr.db") as db:  # what another process would write
        db.execute(
            "INSERT INTO mpr_transcode_job (id, source_path, preset_snapshot, output_path, priority, executor,"
            " status, progress, attempts, chunked, created_at, updated_at)"
            " VALUES (?, 'elsewhere.mp4', '{}', ?, 0, 'elsewhere', 'pending', 0, 0, 0, ?, ?)",
            (job_id, f"elsewhere-{job_id}.mp4", now, now),
        )
    page.goto(ui_server.url + "/")
    row = job_row(page, job_id)
    expect(row).to_have_attribute("data-status", "pending")
    expect(page.locator(".queue .live")).to_have_attribute("data-state", "live")

    with sqlite3.connect(ui_server.var / "mpr.db") as db:
        db.execute("UPDATE mpr_transcode_job SET status = 'completed', progress = 100 WHERE id = ?", (job_id,))
    # no event is sent for this change: the queue's periodic re-read (every 10 s) shows it
    expect(row).to_have_attribute("data-status", "completed", timeout=45_000)
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")


def test_upload_button_adds_files_to_the_library(page, ui_server, clip_cache, tmp_path):
    """Upload: the chosen file streams to /api/upload, is probed, shows in the library; a second copy is renamed."""
    src = place_clip(tmp_path, clip_cache, "upload", seconds=1.0)
    page.goto(ui_server.url + "/")
    with page.expect_response(lambda r: "/api/upload" in r.url) as upload:
        page.get_by_test_id("upload-input").set_input_files(str(src))
    assert upload.value.status == 201
    expect(page.get_by_test_id("upload-result")).to_contain_text(f"uploaded {src.name} (ready)")
    expect(page.locator(f'button.asset[data-asset="{src.name}"]')).to_be_visible()
    assert (ui_server.media_in / src.name).read_bytes() == src.read_bytes()

    with page.expect_response(lambda r: "/api/upload" in r.url) as again:
        page.get_by_test_id("upload-input").set_input_files(str(src))
    assert again.value.status == 201
    renamed = f"{src.stem} (1).mp4"
    assert (ui_server.media_in / renamed).read_bytes() == src.read_bytes()
    expect(page.get_by_test_id("upload-result")).to_contain_text(f"uploaded as {renamed} (ready)")
    expect(page.locator(f'button.asset[data-asset="{renamed}"]')).to_be_visible()
    names = {a["filename"] for a in ui_server.graphql('{ assets(status: "ready") { filename } }')["assets"]}
    assert {src.name, renamed} <= names
