"""The request log's traffic filter in a real browser: a reviewer sees what callers were
answered, chooses the shadow arm's mirrors, sees each marked with the request it mirrored,
filters by feedback on the answered traffic, and goes back to everything."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from ftportal.roles import Role
from serving.models import ApplicationKey, RequestStatus
from serving.request_log import RequestLogEntry, request_logs_write
from serving.services import feedback_record

from .conftest import login

pytestmark = pytest.mark.e2e


def logged(project_id: int, request_id: str, seconds_ago: int, **fields: str) -> RequestLogEntry:
    return RequestLogEntry(
        project_id=project_id,
        requested_model="Ticket triage/production",
        messages=[{"role": "user", "content": f"question of {request_id}"}],
        output="billing",
        status=RequestStatus.OK,
        latency_ms=20,
        request_id=request_id,
        created_at=timezone.now() - timedelta(seconds=seconds_ago),
        **fields,  # type: ignore[arg-type]
    )


def test_a_reviewer_switches_between_answered_and_shadow_traffic(
    live_server, page: Page, project, make_member
) -> None:
    reviewer = make_member(Role.REVIEWER)
    request_logs_write(
        [
            logged(project.pk, "req_answered_1", 30, experiment_arm="control"),
            logged(project.pk, "req_answered_2", 20, experiment_arm="challenger"),
            logged(
                project.pk, "req_mirror_1", 10, experiment_arm="shadow", shadow_of="req_answered_1"
            ),
        ]
    )
    key = ApplicationKey.objects.create(
        project=project, name="support bot", prefix="ftp_0123456789ab", rate_limit_per_minute=60
    )
    feedback_record(key=key, request_id="req_answered_1", score=0.0, correction="refunds")

    login(page, live_server, reviewer.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/requests/")
    rows = page.locator("#request-log-list tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#request-req_mirror_1")).to_have_count(0)
    expect(page.locator("#traffic-filter")).to_have_value("answered")

    page.locator("#traffic-filter").select_option("shadow")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"traffic=shadow"))
    expect(rows).to_have_count(1)
    expect(page.locator("#request-req_mirror_1 .request-shadow")).to_contain_text(
        "shadow: mirrors req_answered_1, answered to no one"
    )

    page.locator("#traffic-filter").select_option("answered")
    page.locator("#feedback-filter").select_option("down")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(page.locator("#request-req_answered_1 .request-feedback")).to_contain_text("thumbs down")

    page.locator("#traffic-filter").select_option("all")
    page.locator("#feedback-filter").select_option("")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(3)
    expect(page.locator(".request-shadow")).to_have_count(1)
