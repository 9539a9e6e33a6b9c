"""The members page in a real browser: an admin creates a user, reads the password shown once,
changes a role, and the new user signs in with that password."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from ftportal.roles import Role

from .conftest import login

pytestmark = [pytest.mark.e2e]


def test_an_admin_creates_a_member_changes_their_role_and_the_audit_log_shows_both(
    live_server, page: Page, project, make_member
) -> None:
    admin = make_member(Role.ADMIN)
    login(page, live_server, admin.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.get_by_role("link", name="Members").click()
    expect(page.get_by_role("heading", name=f"Members: {project.name}")).to_be_visible()

    create = page.locator("#create-member-form")
    create.get_by_label("Username").fill("dana")
    create.get_by_label("Role").select_option(label="Reviewer")
    create.get_by_role("button", name="Create").click()
    password = page.locator("#generated-password-value").inner_text()
    assert len(password) >= 12

    row = page.locator('#member-list tr[data-member="dana"]')
    row.get_by_label("Role of dana").select_option(label="ML lead")
    row.get_by_role("button", name="Change role").click()
    expect(page.locator(".messages")).to_contain_text("dana is now ML lead.")
    expect(page.locator("#generated-password")).to_have_count(0)
    log = page.locator("#audit-log tbody tr")
    expect(log.nth(0)).to_contain_text("changed a role")
    expect(log.nth(0).locator("td").nth(4)).to_have_text("Reviewer")
    expect(log.nth(0).locator("td").nth(5)).to_have_text("ML lead")
    expect(log.nth(1)).to_contain_text("created a user and added them")

    login(page, live_server, "dana", password)
    expect(page.get_by_role("link", name=project.name)).to_be_visible()
