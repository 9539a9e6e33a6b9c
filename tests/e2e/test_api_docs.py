"""The interactive API docs in a real browser: served from our own static files (nothing is
fetched from another host), listing the operations, and able to call the API as the
signed-in user."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Request, expect

from ftportal.roles import Role

from .conftest import login

pytestmark = [pytest.mark.e2e]


def test_the_api_docs_list_the_operations_and_try_one_without_leaving_the_site(
    live_server, page: Page, project, make_member
) -> None:
    lead = make_member(Role.ML_LEAD)
    login(page, live_server, lead.username)
    requested: list[str] = []

    def remember(request: Request) -> None:
        requested.append(request.url)

    page.on("request", remember)

    page.goto(f"{live_server.url}/api/docs/")

    expect(page.locator(".swagger-ui .info .title")).to_contain_text("ftportal API")
    members = page.locator('.opblock-summary-path[data-path="/api/projects/{project_id}/members/"]')
    expect(members.first).to_be_visible()
    expect(
        page.locator(
            '.opblock-summary-path[data-path="/api/projects/{project_id}/datasets/"]'
        ).first
    ).to_be_visible()

    # Try one: the list of my projects, sent with my session, answers one page.
    listing = page.locator("#operations-projects-projects_list")
    listing.locator(".opblock-summary").click()
    listing.get_by_role("button", name="Try it out").click()
    listing.get_by_role("button", name="Execute").click()
    body = listing.locator(".live-responses-table .response-col_description pre").first
    expect(body).to_contain_text('"count": 1')
    expect(body).to_contain_text(project.name)

    server = urlsplit(live_server.url).netloc
    elsewhere = [url for url in requested if urlsplit(url).netloc not in ("", server)]
    assert elsewhere == []
    assert any(url.endswith("swagger-ui-bundle.js") for url in requested)
