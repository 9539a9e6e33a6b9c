"""Test settings: the production stack (Postgres, Redis) by default, overridable by env."""

import os
import tempfile

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ftportal")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("FTPORTAL_ARTIFACTS_DIR", tempfile.mkdtemp(prefix="ftportal-artifacts-"))
# Test runs on one machine may overlap (a developer's and CI's); each gets its own database
# and its own Redis key space. The worker subprocess inherits the run id through the env.
TEST_RUN_ID = os.environ.setdefault("FTPORTAL_TEST_RUN_ID", str(os.getpid()))
# Hosted providers are the fakes in fakes/: never a real key, whatever the shell has. Set
# here, before the worker subprocess starts, so it inherits them.
os.environ["OPENAI_API_KEY"] = "sk-fake-test-key"
os.environ["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"  # unreachable unless a test says where
os.environ["ANTHROPIC_API_KEY"] = "sk-ant-fake-test-key"
os.environ["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:9"
# The variables the tests' registered endpoints may name as their key (set before the worker
# subprocess starts, so it inherits them).
os.environ["FTPORTAL_SECRET_ENVS"] = (
    "OPENAI_API_KEY,ANTHROPIC_API_KEY,FAKE_CHAT_KEY,FTPORTAL_TEST_EVAL_RECOVERY_KEY,"
    "FTPORTAL_TEST_E2E_CHAT_KEY,FTPORTAL_TEST_ENDPOINT_KEY"
)
os.environ.pop("FTPORTAL_ENDPOINT_HOSTS", None)  # tests set it where they test it
os.environ.setdefault("FTPORTAL_HOSTED_POLL_SECONDS", "0.2")
os.environ.setdefault("FTPORTAL_PROVIDER_BACKOFF_SECONDS", "0.1")

from config.settings import *  # noqa: E402,F403

DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
DATABASES["default"]["TEST"] = {"NAME": f"test_ftportal_{TEST_RUN_ID}"}  # noqa: F405
# A worker a test starts with a private broker (start_celery_worker(private_broker=True)) gets a
# prefix of its own: what its beat and reaper queue never reaches the session's worker.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "global_keyprefix": os.environ.get(
        "FTPORTAL_TEST_BROKER_PREFIX", f"ftportal-test-{TEST_RUN_ID}:"
    )
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests never run collectstatic (the live server serves static files from the finders), so
# WhiteNoise looks files up per request instead of warning that STATIC_ROOT is missing.
WHITENOISE_AUTOREFRESH = True
