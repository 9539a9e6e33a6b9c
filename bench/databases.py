"""Scratch Postgres databases for the benches that need rows of their own: created beside the
one DATABASE_URL names, and dropped (forcibly: a bench's server may still hold connections)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/ftportal"


def server_url() -> str:
    """DATABASE_URL without its database name: where the scratch databases are made."""
    return os.environ.get("DATABASE_URL", DEFAULT_URL).rsplit("/", 1)[0]


def scratch_database_create(prefix: str) -> tuple[str, str]:
    """An empty database named ``<prefix>_<pid>`` (dropped first if a crashed run left it);
    returns (server url, name), its URL being ``f"{server}/{name}"``."""
    import psycopg

    server, name = server_url(), f"{prefix}_{os.getpid()}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return server, name


def scratch_database_drop(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def in_scratch_django_database(prefix: str, work: Callable[[], None]) -> None:
    """Run ``work`` with Django pointed at a scratch database (DATABASE_URL set before Django
    reads its settings, so ``work`` sets Django up), and drop the database afterwards, also
    when the run is stopped (Ctrl-C, or a timeout's SIGTERM, turned into an exit here)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    server, name = scratch_database_create(prefix)
    os.environ["DATABASE_URL"] = f"{server}/{name}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    try:
        work()
    finally:
        from django.db import connections

        connections.close_all()
        scratch_database_drop(server, name)
