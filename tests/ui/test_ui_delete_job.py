"""Timeline UI: deleting a finished job from the queue, with and without its output file."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.ui.helpers import create_job_id, is_graphql_mutation, place_clip

pytestmark = pytest.mark.browser


def _transcode(page, clip) -> str:
    page.locator(f'button.asset[data-asset="{clip.name}"]').click()
    expect(page.locator("#detail-title")).to_have_text(clip.name)
    page.get_by_label("Preset").select_option(label="h264-720p (mp4)")
    with page.expect_response(is_graphql_mutation("createJob")) as created:
        page.get_by_role("button", name="Transcode", exact=True).click()
    job_id = create_job_id(created.value)
    expect(page.locator(f'li.job[data-job-id="{job_id}"]')).to_have_attribute(
        "data-status", "completed", timeout=60_000
    )
    return job_id


def test_delete_a_finished_job_with_and_without_its_output(page, ui_server, tmp_path):
    clip = place_clip(ui_server.media_in, tmp_path, "delete-me", seconds=1.0)
    page.goto(ui_server.url + "/")
    page.get_by_role("button", name="Scan media folder").click()
    expect(page.get_by_test_id("scan-result")).to_contain_text(re.compile(r"Found \d+"))
    kept_id, dropped_id = _transcode(page, clip), _transcode(page, clip)
    outputs = {}
    for job_id in (kept_id, dropped_id):
        data = ui_server.graphql(f'{{ job(id: "{job_id}") {{ outputPath }} }}')
        outputs[job_id] = ui_server.media_out / data["job"]["outputPath"]
        assert outputs[job_id].is_file()

    # keep the output: the row goes, the file stays; "Keep it" first backs out without deleting
    row = page.locator(f'li.job[data-job-id="{kept_id}"]')
    row.get_by_role("button", name=re.compile("Delete job")).click()
    row.get_by_role("button", name="Keep it").click()
    expect(row.get_by_role("group")).to_have_count(0)
    row.get_by_role("button", name=re.compile("Delete job")).click()
    expect(row.get_by_role("group")).to_contain_text("Its output file is kept")
    with page.expect_response(is_graphql_mutation("deleteJob")):
        row.get_by_role("button", name="Yes, delete").click()
    expect(row).to_have_count(0)
    assert outputs[kept_id].is_file()

    # with the box ticked the output file goes too
    row = page.locator(f'li.job[data-job-id="{dropped_id}"]')
    row.get_by_role("button", name=re.compile("Delete job")).click()
    row.get_by_label("also delete the output file").check()
    expect(row.get_by_role("group")).to_contain_text("and its output file?")
    with page.expect_response(is_graphql_mutation("deleteJob")):
        row.get_by_role("button", name="Yes, delete").click()
    expect(row).to_have_count(0)
    assert not outputs[dropped_id].exists()

    # gone for the server too
    ids = {j["id"] for j in ui_server.graphql("{ jobs { id } }")["jobs"]}
    assert not ids & {kept_id, dropped_id}
