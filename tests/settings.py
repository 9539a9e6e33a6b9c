"""Test settings: the production stack (Postgres, Redis) by default, overridable by env."""

import os
import tempfile

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ftportal")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("FTPORTAL_ARTIFACTS_DIR", tempfile.mkdtemp(prefix="ftportal-artifacts-"))

from ftportal.settings import *  # noqa: E402,F403

DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
