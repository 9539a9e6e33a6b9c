"""Every page has an icon: base.html links one, and /favicon.ico (asked for by browsers
whatever the page links) answers with it instead of a 404."""

from __future__ import annotations

import re
import struct

from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

from ftportal.roles import Role


def test_favicon_ico_is_served_without_a_login(client: Client, db: None) -> None:
    response = client.get("/favicon.ico", follow=True)

    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content  # type: ignore[attr-defined]
    reserved, kind, count = struct.unpack("<HHH", body[:6])
    assert (reserved, kind) == (0, 1) and count >= 1  # an ICO file's header
    assert response["Content-Type"] == "image/vnd.microsoft.icon"
    assert "max-age" in response["Cache-Control"]


def test_every_page_links_an_icon_that_exists(client: Client, make_member, project) -> None:
    client.force_login(make_member(Role.REVIEWER))
    for url in (reverse("login"), f"/projects/{project.pk}/"):
        html = client.get(url).content.decode()
        links = re.findall(r'<link rel="icon" href="/static/([^"]+)"', html)
        assert links, f"{url} links no icon"
        for name in links:
            assert finders.find(name), f"{url} links {name}, which is not a static file"
