"""Creating a project in a real browser: site staff open "New project" from the project list,
name it, give it a default system prompt and a first member, land on its page as its admin, and
change the default in its settings; the member then finds the project among theirs."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from ftportal.models import Membership, Project

from .conftest import login

pytestmark = [pytest.mark.e2e]


def test_staff_create_a_project_with_a_member_and_then_change_its_default_prompt(
    live_server, page: Page
) -> None:
    User.objects.create_user(username="ops-admin", password="pw", is_staff=True)
    User.objects.create_user(username="dana", password="pw")
    login(page, live_server, "ops-admin")

    page.get_by_role("link", name="New project").click()
    expect(page.get_by_role("heading", name="New project")).to_be_visible()
    form = page.locator("#project-new-form")
    form.get_by_label("Project name").fill("Intent triage")
    form.get_by_label("Default system prompt").fill("Answer with one intent label.")
    form.get_by_label("Username of member 1").fill("dana")
    form.get_by_label("Role of member 1").select_option(label="Reviewer")
    form.get_by_role("button", name="Create project").click()

    expect(page.get_by_role("heading", name="Intent triage")).to_be_visible()
    expect(page.locator(".messages")).to_contain_text("Created Intent triage; you are its admin.")
    project = Project.objects.get(name="Intent triage")
    assert project.default_system_prompt == "Answer with one intent label."
    assert Membership.objects.get(project=project, user__username="dana").role == "reviewer"

    page.get_by_role("link", name="Settings").click()
    prompt = page.get_by_label("Default system prompt")
    expect(prompt).to_have_value("Answer with one intent label.")
    prompt.fill("Reply with the intent only.")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Saved the project's settings.")
    expect(page.get_by_label("Default system prompt")).to_have_value("Reply with the intent only.")

    login(page, live_server, "dana")
    expect(page.get_by_role("link", name="Intent triage")).to_be_visible()
    expect(page.get_by_role("link", name="New project")).to_have_count(0)


def test_a_refused_member_is_named_by_row_and_the_form_keeps_what_was_typed(
    live_server, page: Page
) -> None:
    User.objects.create_user(username="ops-admin", password="pw", is_staff=True)
    login(page, live_server, "ops-admin")
    page.goto(f"{live_server.url}/projects/new/")

    form = page.locator("#project-new-form")
    form.get_by_label("Project name").fill("Intent triage")
    form.get_by_label("Username of member 2").fill("nobody")
    form.get_by_role("button", name="Create project").click()

    expect(page.locator("#project-new-error")).to_contain_text("Member row 2: no user 'nobody'")
    expect(page.locator("#project-new-form").get_by_label("Project name")).to_have_value(
        "Intent triage"
    )
    assert not Project.objects.exists()
