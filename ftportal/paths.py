"""Server paths never reach a page or an API answer.

A failure stored for people to read (a job's, an evaluation's, an import's, an analysis's)
often carries the text of an exception, and exceptions name files by their absolute path: where
the artifact store, the uploads or the model cache lie on the server's disk.
``without_server_paths`` keeps the part that helps (which file, inside which store) and drops
where the store is.
Artifact paths stored on purpose are shown through ``training.selectors.artifact_name``.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings


def _server_dirs() -> list[tuple[str, str]]:
    """(directory as the server spells it, the name shown instead), longest first so a store
    inside the var directory is named as the store."""
    named = [
        (settings.FTPORTAL_ARTIFACTS_DIR, "artifacts"),
        (settings.FTPORTAL_UPLOADS_DIR, "uploads"),
        (settings.FTPORTAL_MODEL_CACHE, "models"),
        (settings.VAR_DIR, "var"),
        (settings.BASE_DIR, "ftportal"),
    ]
    spellings: dict[str, str] = {}
    for directory, name in named:
        for spelling in {str(Path(directory)), str(Path(directory).resolve())}:
            if spelling not in ("", "/"):
                spellings.setdefault(spelling.rstrip("/"), name)
    return sorted(spellings.items(), key=lambda pair: len(pair[0]), reverse=True)


def without_server_paths(text: str) -> str:
    """``text`` with each server directory replaced by its short name (``artifacts/...``)."""
    if not text:
        return text
    for directory, name in _server_dirs():
        # Only whole directory names: /srv/var must not match /srv/various.
        text = re.sub(re.escape(directory) + r"(?![\w.-])", name, text)
    return text
