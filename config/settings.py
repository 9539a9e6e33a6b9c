"""Settings come from the environment.

With nothing set, ftportal runs on an embedded default: SQLite and a Celery broker on the local
filesystem, so one command starts web server and worker with no other service. DATABASE_URL and
CELERY_BROKER_URL switch to Postgres and Redis.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("FTPORTAL_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise RuntimeError("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "dev-only-insecure-key"
ALLOWED_HOSTS = [
    h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",") if h
]
CSRF_TRUSTED_ORIGINS = [
    o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    # Sign-in lockout and the Content-Security-Policy header (security block below).
    "axes",
    "csp",
    "drf_spectacular",
    # Swagger UI's files for /api/docs/, served from our static files: no CDN.
    "drf_spectacular_sidecar",
    "ftportal",
    "catalog",
    "datasets",
    "training",
    "evaluation",
    "registry",
    "serving",
    "costs",
    "monitoring",
    # The site itself: its management commands (load_demo).
    "config",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves /static/ from STATIC_ROOT (after collectstatic) when DEBUG is off, under runserver
    # and gunicorn alike.
    "ftportal.middleware.StaticFilesMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "ftportal.middleware.ApplicationErrorPageMiddleware",
    # Last: turns a locked-out sign-in into the 429 page (ftportal.signin.lockout_response).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'ftportal.sqlite3'}", conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The worker and the web server write at once; wait for the lock rather than fail.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "static_collected"))
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project_list"
LOGOUT_REDIRECT_URL = "login"

# Form fields (not files) larger than this are refused rather than read into memory.
DATA_UPLOAD_MAX_MEMORY_SIZE = 20 * 1024 * 1024
# Uploads: up to 1 GiB. Anything over 2.5 MB streams to a temporary file in the uploads folder
# (never into memory), so the import can move it into place rather than copy it.
FTPORTAL_MAX_IMPORT_BYTES = int(os.environ.get("FTPORTAL_MAX_IMPORT_BYTES", 1024**3))
FTPORTAL_UPLOADS_DIR = Path(os.environ.get("FTPORTAL_UPLOADS_DIR", VAR_DIR / "uploads"))
FTPORTAL_UPLOADS_DIR.mkdir(parents=True, exist_ok=True)
FILE_UPLOAD_TEMP_DIR = str(FTPORTAL_UPLOADS_DIR)
FILE_UPLOAD_MAX_MEMORY_SIZE = int(2.5 * 1024 * 1024)
# Files up to this size import inside the request, for instant feedback; bigger ones in the
# background with a progress bar. Both go through the same streaming import.
FTPORTAL_SYNC_IMPORT_MAX_BYTES = int(
    os.environ.get("FTPORTAL_SYNC_IMPORT_MAX_BYTES", 2 * 1024 * 1024)
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Hashed, expiring, revocable tokens (ftportal.tokens), same "Token <key>" header.
        "ftportal.tokens.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "ftportal.api_errors.exception_handler",
    # Generic views page the same way as every hand-written list (see ftportal.api).
    "DEFAULT_PAGINATION_CLASS": "ftportal.pagination.ListPagination",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ftportal API",
    "DESCRIPTION": "Dataset curation and fine-tuned model lifecycle.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    # No validator badge: Swagger UI would send the schema to validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Choice sets that share a field name with another component's get a name of their own.
    "ENUM_NAME_OVERRIDES": {"ExperimentStatusEnum": "serving.models.ExperimentStatus"},
}
# Issue 13 (API edges): every operation documents the one error shape (ftportal/schema.py), and
# the schema (with /api/docs/, which loads it) is for signed-in users only: it maps every
# operation and input of the API, which is no business of anonymous visitors.
REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "ftportal.schema.ErrorDocumentingAutoSchema"
SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"] = ["rest_framework.permissions.IsAuthenticated"]

# Celery: the filesystem transport needs no server, for the one-command start.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "celery-queue"
    for _sub in ("out", "processed"):
        (_queue_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "out"),
        "data_folder_out": str(_queue_dir / "out"),
        "processed_folder": str(_queue_dir / "processed"),
        # Kombu keeps its exchange tables here; left unset, it writes them into the working
        # directory (the repository, under `make run`).
        "control_folder": str(_queue_dir / "control"),
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# Queues: "training" runs local training (one job at a time per worker: start those workers
# with --concurrency=1, on GPU hosts), "inference" runs evaluations, "default" the rest
# (imports, analyses, submitting and polling hosted jobs, the reaper).
CELERY_TASK_ROUTES = {
    "training.tasks.run_training_job": {"queue": "training"},
    # The reaper must not wait behind a long evaluation; exact names win over patterns.
    "evaluation.tasks.reap_abandoned_evaluations": {"queue": "default"},
    "evaluation.tasks.*": {"queue": "inference"},
    # A drift report embeds thousands of texts: with the model work, not before the reapers.
    "monitoring.tasks.drift_reports_compute": {"queue": "inference"},
}
# A worker that dies holding a message gets it redelivered; redelivery is harmless because a
# job is claimed under a row lock and runs only from "queued".
CELERY_TASK_REJECT_ON_WORKER_LOST = True

# Jobs whose worker died: the worker writes a heartbeat every FTPORTAL_HEARTBEAT_SECONDS; celery
# beat runs the reaper every FTPORTAL_REAPER_SECONDS, which treats a job silent for
# FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS as abandoned: local jobs resume from their last checkpoint
# (up to FTPORTAL_MAX_JOB_ATTEMPTS attempts, then fail with the reason), hosted jobs are polled.
FTPORTAL_HEARTBEAT_SECONDS = float(os.environ.get("FTPORTAL_HEARTBEAT_SECONDS", 10))
FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS = float(os.environ.get("FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS", 90))
FTPORTAL_REAPER_SECONDS = float(os.environ.get("FTPORTAL_REAPER_SECONDS", 30))
FTPORTAL_MAX_JOB_ATTEMPTS = int(os.environ.get("FTPORTAL_MAX_JOB_ATTEMPTS", 3))
CELERY_BEAT_SCHEDULE = {
    "reap-abandoned-training-jobs": {
        "task": "training.tasks.reap_abandoned_jobs",
        "schedule": FTPORTAL_REAPER_SECONDS,
    },
    # Evaluations resume where they stopped (stored answers are never asked again).
    "reap-abandoned-evaluations": {
        "task": "evaluation.tasks.reap_abandoned_evaluations",
        "schedule": FTPORTAL_REAPER_SECONDS,
    },
}

# --- Imports: work limits and the import reaper (issue 13, items 2 to 4) ---------------------
# Bytes alone do not bound an import's work (a small gzip may hold a billion empty lines, a
# small .xlsx millions of cells), so an import is also capped in lines (blank ones count),
# spreadsheet and CSV cells (per row and in all) and time; a file over a cap fails with the
# limit and the line named. Compressed and spreadsheet uploads always import in the worker.
FTPORTAL_IMPORT_MAX_LINES = int(os.environ.get("FTPORTAL_IMPORT_MAX_LINES", 2_000_000))
FTPORTAL_IMPORT_MAX_CELLS_PER_ROW = int(os.environ.get("FTPORTAL_IMPORT_MAX_CELLS_PER_ROW", 1024))
FTPORTAL_IMPORT_MAX_CELLS = int(os.environ.get("FTPORTAL_IMPORT_MAX_CELLS", 20_000_000))
FTPORTAL_IMPORT_TIME_BUDGET_SECONDS = float(
    os.environ.get("FTPORTAL_IMPORT_TIME_BUDGET_SECONDS", 15 * 60)
)
# A running import whose worker stopped beating for FTPORTAL_HEARTBEAT_TIMEOUT_SECONDS fails
# (nothing was imported; its upload is deleted); one left queued this long (its columns never
# chosen, or no worker took it) is abandoned the same way.
FTPORTAL_IMPORT_ABANDON_SECONDS = float(
    os.environ.get("FTPORTAL_IMPORT_ABANDON_SECONDS", 24 * 3600)
)
CELERY_BEAT_SCHEDULE["reap-abandoned-imports"] = {
    "task": "datasets.tasks.reap_abandoned_imports",
    "schedule": FTPORTAL_REAPER_SECONDS,
}
# --- end of imports -----------------------------------------------------------------------------
CELERY_TASK_ALWAYS_EAGER = False

# The cache carries import progress from the worker to the page while the import's transaction
# is still open (its rows are not visible yet). Redis when the broker is Redis; otherwise files,
# which the web server and the worker on one machine share.
_CACHE_KEY_PREFIX = "ftportal" + os.environ.get("FTPORTAL_TEST_RUN_ID", "")
_REDIS_URL = os.environ.get("REDIS_URL") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
)
if _REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _REDIS_URL,
            "KEY_PREFIX": _CACHE_KEY_PREFIX,
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
            "KEY_PREFIX": _CACHE_KEY_PREFIX,
        }
    }

# Where hosted calls go when a registered endpoint (catalog.Endpoint) leaves its base URL blank:
# an OpenAI-compatible service or a proxy. Keys are never settings: see the block below.
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "")
ANTHROPIC_BASE_URL = os.environ.get("ANTHROPIC_BASE_URL", "")
# Evaluations call hosted models concurrently, at most this many requests in flight per
# candidate; rate limits (429 with Retry-After) pause all of them together.
FTPORTAL_EVAL_MAX_IN_FLIGHT = int(os.environ.get("FTPORTAL_EVAL_MAX_IN_FLIGHT", 16))
FTPORTAL_PROVIDER_TIMEOUT_SECONDS = float(os.environ.get("FTPORTAL_PROVIDER_TIMEOUT_SECONDS", 60))
FTPORTAL_HOSTED_POLL_SECONDS = float(os.environ.get("FTPORTAL_HOSTED_POLL_SECONDS", 30))
# Transient provider errors (429, 5xx, timeouts) are retried this many times with exponential
# backoff from FTPORTAL_PROVIDER_BACKOFF_SECONDS, or after the provider's Retry-After.
FTPORTAL_PROVIDER_MAX_RETRIES = int(os.environ.get("FTPORTAL_PROVIDER_MAX_RETRIES", 8))
FTPORTAL_PROVIDER_BACKOFF_SECONDS = float(os.environ.get("FTPORTAL_PROVIDER_BACKOFF_SECONDS", 5))

# What an hour of this worker's hardware costs, for the cost of local jobs; set it per host
# (a GPU host's rate differs). The speed is only the first estimate (bench/training.py measured
# 115 to 140 training tokens/s for SmolLM2-135M on 2 CPU cores); later estimates use the median
# measured speed of finished local jobs.
FTPORTAL_LOCAL_USD_PER_HOUR = os.environ.get("FTPORTAL_LOCAL_USD_PER_HOUR", "0.10")
FTPORTAL_LOCAL_TOKENS_PER_SECOND = float(os.environ.get("FTPORTAL_LOCAL_TOKENS_PER_SECOND", 150))

# Where models live: the base-model cache (safetensors) and trained adapters.
FTPORTAL_MODEL_CACHE = Path(os.environ.get("FTPORTAL_MODEL_CACHE", VAR_DIR / "models"))
FTPORTAL_ARTIFACTS_DIR = Path(os.environ.get("FTPORTAL_ARTIFACTS_DIR", VAR_DIR / "artifacts"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # The HTTP client under the provider SDKs logs every request at INFO: a line per gateway
    # request (and per evaluated item), which cost the gateway a tenth of its time in bench/.
    "loggers": {
        name: {"level": os.environ.get("HTTP_CLIENT_LOG_LEVEL", "WARNING")}
        for name in ("httpx", "httpx2", "httpcore", "httpcore2")
    },
}

# --- Worker presence (issue 13, item 6) ---
# Every Celery worker process records which queues it consumes every
# FTPORTAL_WORKER_PRESENCE_SECONDS (ftportal.heartbeat); a queue no worker has reported on for
# FTPORTAL_WORKER_STALE_SECONDS is unattended, and the pages and /healthz say so. A running job
# or evaluation whose own heartbeat is older than FTPORTAL_HEARTBEAT_STALE_SECONDS (hosted
# jobs: FTPORTAL_HOSTED_POLL_STALE_SECONDS, their heartbeat is the last poll) shows how long
# the worker has been silent instead of its time estimate.
FTPORTAL_WORKER_PRESENCE_SECONDS = float(os.environ.get("FTPORTAL_WORKER_PRESENCE_SECONDS", 10))
FTPORTAL_WORKER_STALE_SECONDS = float(
    os.environ.get("FTPORTAL_WORKER_STALE_SECONDS", 3 * FTPORTAL_WORKER_PRESENCE_SECONDS + 5)
)
FTPORTAL_HEARTBEAT_STALE_SECONDS = float(
    os.environ.get("FTPORTAL_HEARTBEAT_STALE_SECONDS", 3 * FTPORTAL_HEARTBEAT_SECONDS)
)
FTPORTAL_HOSTED_POLL_STALE_SECONDS = float(
    os.environ.get("FTPORTAL_HOSTED_POLL_STALE_SECONDS", 3 * FTPORTAL_HOSTED_POLL_SECONDS)
)

# --- Provider endpoints and secrets (catalog) ---------------------------------------------
# Admins register endpoints (URL, which secret, which models) in /admin/; users only pick one.
# FTPORTAL_SECRET_ENVS: the only worker variables an endpoint may name as its key (read by the
# workers at call time, never stored). FTPORTAL_ENDPOINT_HOSTS: when set, the only hosts an
# endpoint may point at, checked when an admin saves it and again before a worker sends.
FTPORTAL_SECRET_ENVS = frozenset(
    name.strip()
    for name in os.environ.get("FTPORTAL_SECRET_ENVS", "OPENAI_API_KEY,ANTHROPIC_API_KEY").split(
        ","
    )
    if name.strip()
)
FTPORTAL_ENDPOINT_HOSTS = frozenset(
    host.strip().lower()
    for host in os.environ.get("FTPORTAL_ENDPOINT_HOSTS", "").split(",")
    if host.strip()
)

# --- Security: HTTPS, cookies, Content-Security-Policy (issue 13) ---------------------------
# With DEBUG off every default is the secure one (`manage.py check --deploy` is clean); each can
# be turned off by env for a plain-http run on one's own machine (scripts/run.sh does).
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
# The health check is asked over plain http from inside the host (docker-compose.yml).
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = int(
    os.environ.get("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
# Asking browsers to preload the domain is a commitment for the whole domain, so it is the
# operator's choice (DJANGO_SECURE_HSTS_PRELOAD=1), and Django's reminder about it is silenced.
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# Only behind a TLS-terminating proxy that sets X-Forwarded-Proto (and X-Forwarded-For, which
# ftportal.signin.client_ip then reads): trusting the header without one lets clients forge it.
FTPORTAL_BEHIND_TLS_PROXY = env_bool("FTPORTAL_BEHIND_TLS_PROXY", False)
if FTPORTAL_BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Scripts and styles only from our own static files: no inline script, style or handler, no
# eval (templates/base.html turns htmx's eval off). data: images are Swagger UI's icons.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Sign-in limits and API tokens (issue 13) ----------------------------------------------
# ftportal.signin: AXES_FAILURE_LIMIT failed sign-ins for one account from one address lock
# that pair for AXES_COOLOFF_TIME (login page, /admin/ and POST /api/auth/token/ alike). The
# token endpoint also refuses an account after FTPORTAL_TOKEN_FAILURES_PER_ACCOUNT failures from
# any address, and an address after FTPORTAL_TOKEN_FAILURES_PER_CLIENT for any account, within
# the same cool-off.
AUTHENTICATION_BACKENDS = [
    "ftportal.signin.SignInLockBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("FTPORTAL_SIGNIN_FAILURE_LIMIT", 5))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("FTPORTAL_SIGNIN_COOLOFF_MINUTES", 15)))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "ftportal.signin.lockout_response"
AXES_CLIENT_IP_CALLABLE = "ftportal.signin.client_ip"
FTPORTAL_TOKEN_FAILURES_PER_ACCOUNT = int(os.environ.get("FTPORTAL_TOKEN_FAILURES_PER_ACCOUNT", 20))
FTPORTAL_TOKEN_FAILURES_PER_CLIENT = int(os.environ.get("FTPORTAL_TOKEN_FAILURES_PER_CLIENT", 50))
# API tokens (ftportal.tokens) stop working this many days after they are created.
FTPORTAL_API_TOKEN_DAYS = int(os.environ.get("FTPORTAL_API_TOKEN_DAYS", 30))

# --- Application keys (serving, issue 15) ----------------------------------------------------
# A new application key's rate limit, in requests per minute, unless its creator sets its own
# (serving.services.application_key_rate_check counts them in Redis, one-minute windows).
FTPORTAL_APP_KEY_RATE_LIMIT_PER_MINUTE = int(
    os.environ.get("FTPORTAL_APP_KEY_RATE_LIMIT_PER_MINUTE", 600)
)

# --- The gateway (serving.gateway, /v1/) -------------------------------------------------------
# Tries of one request to a hosted backend before the application gets a 503: an application
# waits on the answer, so fewer than a batch job's retries (FTPORTAL_PROVIDER_MAX_RETRIES).
FTPORTAL_GATEWAY_BACKEND_ATTEMPTS = int(os.environ.get("FTPORTAL_GATEWAY_BACKEND_ATTEMPTS", 2))
# Tokens an answer may have when the request names no max_tokens, and the most it may name.
FTPORTAL_GATEWAY_DEFAULT_MAX_TOKENS = int(
    os.environ.get("FTPORTAL_GATEWAY_DEFAULT_MAX_TOKENS", 256)
)
FTPORTAL_GATEWAY_MAX_TOKENS = int(os.environ.get("FTPORTAL_GATEWAY_MAX_TOKENS", 4096))
# Threads per gateway process for database reads and waiting on backends: each request in
# flight holds one, so this bounds the requests a process answers at once.
FTPORTAL_GATEWAY_THREADS = int(os.environ.get("FTPORTAL_GATEWAY_THREADS", 64))
# How long a gateway process keeps what a model name resolves to (serving.model_names): a
# promotion or rollback made in another process is served within this; 0 reads it every time.
FTPORTAL_GATEWAY_NAME_TTL_SECONDS = float(os.environ.get("FTPORTAL_GATEWAY_NAME_TTL_SECONDS", 1.0))
# The name of a registered vLLM endpoint (catalog, kind "vllm") that serves the adapters of
# versions trained here; blank: the gateway's own process answers with the local model.
FTPORTAL_GATEWAY_VLLM_ENDPOINT = os.environ.get("FTPORTAL_GATEWAY_VLLM_ENDPOINT", "")
# Threads per gateway process that ask an experiment's shadow arm (serving.experiments): at
# most this many mirrored requests run and as many wait; past that a mirror is skipped.
FTPORTAL_SHADOW_CONCURRENCY = int(os.environ.get("FTPORTAL_SHADOW_CONCURRENCY", 4))
# The local model server (python -m providers.local.serve; `make run` starts it) that answers
# for local LoRA versions, batching concurrent requests: its origin, e.g.
# http://127.0.0.1:8002. Blank: the gateway's own process answers with the local model, one
# request at a time (tests, and a gateway started without the server).
FTPORTAL_GATEWAY_LOCAL_SERVER_URL = os.environ.get("FTPORTAL_GATEWAY_LOCAL_SERVER_URL", "")
# How many adapters the local model server keeps registered (its --max-adapters).
FTPORTAL_LOCAL_SERVER_MAX_ADAPTERS = int(os.environ.get("FTPORTAL_LOCAL_SERVER_MAX_ADAPTERS", 64))

# --- Request log (serving.request_log, issue 15 item 4) -----------------------------------------
# The gateway hands each request's log row to an in-process queue; a background thread writes
# them in batches of up to FTPORTAL_REQUEST_LOG_BATCH_ROWS, at least every
# FTPORTAL_REQUEST_LOG_BATCH_MS. Past FTPORTAL_REQUEST_LOG_QUEUE_ROWS queued rows (the database
# cannot keep up) new rows are dropped and counted, so logging never slows the answer.
FTPORTAL_REQUEST_LOG_QUEUE_ROWS = int(os.environ.get("FTPORTAL_REQUEST_LOG_QUEUE_ROWS", 10_000))
FTPORTAL_REQUEST_LOG_BATCH_ROWS = int(os.environ.get("FTPORTAL_REQUEST_LOG_BATCH_ROWS", 500))
FTPORTAL_REQUEST_LOG_BATCH_MS = int(os.environ.get("FTPORTAL_REQUEST_LOG_BATCH_MS", 200))
# Mask e-mails, phone, card and ID numbers (datasets.quality.analyzers.find_pii) before storage.
FTPORTAL_REQUEST_LOG_REDACT_PII = os.environ.get("FTPORTAL_REQUEST_LOG_REDACT_PII", "") in (
    "1",
    "true",
    "yes",
)
# Rows older than this many days are deleted by celery beat (0 keeps them forever).
FTPORTAL_REQUEST_LOG_RETENTION_DAYS = int(os.environ.get("FTPORTAL_REQUEST_LOG_RETENTION_DAYS", 90))
CELERY_BEAT_SCHEDULE["delete-expired-request-logs"] = {
    "task": "serving.tasks.delete_expired_request_logs",
    "schedule": 3600.0,
}

# --- e-mail ------------------------------------------------------------------------------------
# Where people reach this site, e.g. https://ftportal.example.com: alert e-mails and webhook
# posts link to their alert with it (without it the link is a path, which a chat tool cannot
# open).
FTPORTAL_SITE_URL = os.environ.get("FTPORTAL_SITE_URL", "").rstrip("/")
# Budget alerts are e-mailed (costs.budget_alerts). In development the messages are printed by
# the console backend; a deployment names its SMTP server here.
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "ftportal@localhost")

# --- costs ---------------------------------------------------------------------------------------
# Token prices are imported daily from litellm's price table into dated rows (costs.prices): a
# price that changed adds a row; what was written before keeps its own price.
CELERY_BEAT_SCHEDULE["refresh-token-prices"] = {
    "task": "costs.tasks.prices_refresh",
    "schedule": 24 * 3600.0,
}
# Reconciliation (costs.reconciliation): daily, each OpenAI endpoint with a cost report
# variable is compared day by day with the ledger; a day is flagged when the two differ by more
# than FTPORTAL_RECONCILE_ABS_USD dollars and by more than FTPORTAL_RECONCILE_REL (a fraction)
# of what the provider billed.
FTPORTAL_RECONCILE_ABS_USD = os.environ.get("FTPORTAL_RECONCILE_ABS_USD", "0.50")
FTPORTAL_RECONCILE_REL = os.environ.get("FTPORTAL_RECONCILE_REL", "0.05")
CELERY_BEAT_SCHEDULE["reconcile-provider-costs"] = {
    "task": "costs.tasks.provider_costs_reconcile_daily",
    "schedule": 24 * 3600.0,
}
# The local model server's machine time (costs.local_serving), read from its /metrics at
# FTPORTAL_GATEWAY_LOCAL_SERVER_URL: what each version's adapter decoded since the last reading
# becomes a serving spend. A server restarted between readings loses what it decoded since the
# last one, so readings are frequent.
CELERY_BEAT_SCHEDULE["record-local-serving-time"] = {
    "task": "costs.tasks.local_serving_time_record_task",
    "schedule": 300.0,
}
# Lifecycle (catalog.lifecycle): daily, each OpenAI(-compatible) endpoint that a base model
# names is asked for its model list, and an announced shutdown_date becomes the base model's
# retires_at. Then (monitoring.lifecycle_alerts) every production version whose base model
# shuts down, or can no longer be fine-tuned, within 180 days has its countdown alert.
CELERY_BEAT_SCHEDULE["refresh-model-lifecycle"] = {
    "task": "catalog.tasks.lifecycle_refresh_daily",
    "schedule": 24 * 3600.0,
}
CELERY_BEAT_SCHEDULE["check-lifecycle-alerts"] = {
    "task": "monitoring.tasks.lifecycle_alerts_check_daily",
    "schedule": 24 * 3600.0,
}
# --- monitoring -----------------------------------------------------------------------------------
# Alert rules (monitoring.rules): every production alias gets the default rules, and every
# enabled rule is checked against its window this often.
FTPORTAL_ALERT_RULES_SECONDS = float(os.environ.get("FTPORTAL_ALERT_RULES_SECONDS", 300))
CELERY_BEAT_SCHEDULE["check-alert-rules"] = {
    "task": "monitoring.tasks.alert_rules_check",
    "schedule": FTPORTAL_ALERT_RULES_SECONDS,
}
# Drift reports (monitoring.drift): every production alias's window (the project's drift
# window, 24 hours unless a lead changes it) against its served version's training data; the
# drift rules are checked right after.
FTPORTAL_DRIFT_REPORT_SECONDS = float(os.environ.get("FTPORTAL_DRIFT_REPORT_SECONDS", 3600))
CELERY_BEAT_SCHEDULE["compute-drift-reports"] = {
    "task": "monitoring.tasks.drift_reports_compute",
    "schedule": FTPORTAL_DRIFT_REPORT_SECONDS,
}
# Retraining proposals (monitoring.retraining): hourly, the gating evaluation of each accepted
# retrain whose version is registered is queued, then every production alias is checked for new
# approved examples, drift alerts and its base model's end; nothing is launched before a lead
# accepts a proposal.
CELERY_BEAT_SCHEDULE["check-retraining"] = {
    "task": "monitoring.tasks.retrain_checks_run",
    "schedule": 3600.0,
}
