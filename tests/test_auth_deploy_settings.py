"""Production settings: with DEBUG off and a secret key `check --deploy` is clean, each secure
default can be turned off by env for a plain-http run, and every page is sent a
Content-Security-Policy that its templates can live with (no inline script, style or handler,
no eval in htmx)."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

REPO = Path(__file__).resolve().parent.parent


def _production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "FTPORTAL_BEHIND"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        FTPORTAL_VAR_DIR=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        CELERY_BROKER_URL="filesystem://",
    )
    env.update(extra)
    return env


def _check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_debug_off_and_a_secret_key(tmp_path: Path) -> None:
    result = _check_deploy(_production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_each_secure_default_can_be_turned_off_for_plain_http(tmp_path: Path) -> None:
    env = _production_env(
        tmp_path,
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_SECURE_COOKIES="0",
        DJANGO_SECURE_HSTS_SECONDS="0",
    )
    result = _check_deploy(env)
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr + result.stdout


def _settings_in(env: dict[str, str], *names: str) -> dict[str, object]:
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n, None) for n in {list(names)!r}}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    values: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return values


def test_the_proxy_header_is_trusted_only_when_told_a_tls_proxy_sets_it(tmp_path: Path) -> None:
    plain = _settings_in(_production_env(tmp_path), "SECURE_PROXY_SSL_HEADER")
    assert plain["SECURE_PROXY_SSL_HEADER"] is None
    proxied = _settings_in(
        _production_env(tmp_path, FTPORTAL_BEHIND_TLS_PROXY="1"), "SECURE_PROXY_SSL_HEADER"
    )
    assert proxied["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_pages_and_the_api_send_a_strict_content_security_policy(db: None) -> None:
    user = User.objects.create_user(username="csp", password="pw")
    client = Client()
    client.force_login(user)
    for path in ("/login/", "/", "/api/projects/", "/api/docs/"):
        policy = client.get(path)["Content-Security-Policy"]
        directives = dict(
            (part.split()[0], part.split()[1:]) for part in policy.split(";") if part.strip()
        )
        assert directives["default-src"] == ["'self'"], path
        assert directives["script-src"] == ["'self'"], path
        assert directives["style-src"] == ["'self'"], path
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_htmx_is_configured_without_eval_or_injected_styles(db: None) -> None:
    html = Client().get("/login/").content.decode()
    meta = re.search(r"<meta\s+name=\"htmx-config\"\s+content='([^']*)'>", html)
    assert meta, "templates/base.html lost its htmx-config meta"
    config = json.loads(meta.group(1))
    assert config["allowEval"] is False
    assert config["includeIndicatorStyles"] is False


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
STYLE_ATTRIBUTE = re.compile(r"\sstyle\s*=", re.IGNORECASE)


def test_no_template_carries_inline_script_style_or_handlers() -> None:
    """What the policy would block in a browser, found before any page is opened."""
    found = []
    for template in sorted((REPO / "templates").rglob("*.html")):
        text = template.read_text()
        for pattern in (INLINE_SCRIPT, HANDLER, STYLE_ATTRIBUTE):
            found += [f"{template.relative_to(REPO)}: {m.group(0)}" for m in pattern.finditer(text)]
        if "javascript:" in text or "<style" in text:
            found.append(f"{template.relative_to(REPO)}: javascript: URL or <style> block")
    assert not found, found


def test_static_files_are_served_with_debug_off_after_collectstatic(
    tmp_path: Path, settings, db: None
) -> None:
    """`make run` and the image run with DEBUG off, where Django serves no static files:
    WhiteNoise serves what collectstatic gathered."""
    settings.DEBUG = False
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", interactive=False, verbosity=0)

    response = Client().get("/static/js/actions.js")

    assert response.status_code == 200
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert body == (REPO / "static/js/actions.js").read_bytes()
