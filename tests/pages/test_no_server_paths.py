"""No page and no API answer shows where the server keeps its files.

A project with a trained job (checkpoints and an adapter in the artifact store), a failed job, a
failed evaluation and analysis, and an import that failed while its upload waited in the upload
directory, each failure with the server path an exception would carry. Every page of the
project and every API read is fetched as its ML lead; none may contain an absolute path of the
var, artifacts, uploads or model cache directories.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern

from config.urls import page_patterns
from datasets.imports.services import _fail as import_failed
from datasets.models import AnalysisRun, AnalysisStatus, ImportBatch, ImportStatus
from datasets.quality.services import _fail as analysis_failed
from evaluation.models import EvalStatus
from evaluation.runner import transition as eval_transition
from ftportal.paths import without_server_paths
from ftportal.roles import Role
from tests.api.builders import World, build_world
from tests.api.test_schemathesis import path_ids
from training.models import Checkpoint, JobStatus
from training.services import transition as training_transition

pytestmark = pytest.mark.django_db


def server_dirs() -> list[str]:
    return [
        str(Path(directory).resolve())
        for directory in (
            settings.FTPORTAL_ARTIFACTS_DIR,
            settings.FTPORTAL_UPLOADS_DIR,
            settings.FTPORTAL_MODEL_CACHE,
            settings.VAR_DIR,
        )
    ]


@pytest.fixture
def world(project, make_member, base_model) -> World:
    return build_world(project=project, owner=make_member(Role.ML_LEAD), base_model=base_model)


@pytest.fixture
def exposed(world: World) -> World:
    """Every place a server path is stored, filled through the functions the workers use to
    record a failure, with the text the exceptions they catch would carry."""
    artifacts = Path(settings.FTPORTAL_ARTIFACTS_DIR)
    uploads = Path(settings.FTPORTAL_UPLOADS_DIR)
    cache = Path(settings.FTPORTAL_MODEL_CACHE)
    job = world.first.training_job
    adapter = artifacts / "adapters" / f"job-{job.pk}"
    Checkpoint.objects.create(job=job, step=4, path=str(adapter / "checkpoint-4"), val_loss=0.9)
    type(world.first).objects.filter(pk=world.first.pk).update(adapter_dir=str(adapter))
    missing = adapter / "checkpoint-4" / "adapter_model.safetensors"
    training_transition(
        world.queued_job,
        JobStatus.FAILED,
        error=f"FileNotFoundError: [Errno 2] No such file or directory: '{missing}'",
    )
    eval_transition(
        world.eval_run,
        EvalStatus.FAILED,
        error=f"OSError: {cache / 'smollm2-135m-instruct'} does not appear to have a file "
        "named config.json",
    )
    upload = uploads / "import-7-tickets.jsonl.gz"
    batch = ImportBatch.objects.create(
        dataset=world.dataset,
        filename="tickets.jsonl.gz",
        uploaded_by=world.owner,
        status=ImportStatus.RUNNING,
        stored_path=str(upload),
    )
    import_failed(
        batch,
        f"tickets.jsonl.gz: the import failed ([Errno 5] Input/output error: '{upload}'); "
        "nothing was imported.",
        [],
    )
    analysis = AnalysisRun.objects.create(
        dataset=world.dataset,
        base_model_key="smollm2-135m-instruct",
        status=AnalysisStatus.RUNNING,
        created_by=world.owner,
    )
    analysis_failed(
        analysis.pk,
        f"OSError: cannot read {cache / 'smollm2/tokenizer.json'}",
        started=time.monotonic(),
    )
    return world


def fill(route: str, values: dict[str, Any], parameter: str) -> str:
    return re.sub(parameter, lambda match: str(values[match.group(1)]), route)


def page_urls(world: World) -> list[str]:
    """Every page of the project that a GET shows, with the world's ids."""
    analysis = AnalysisRun.objects.filter(dataset=world.dataset).last()
    urls = []
    for pattern in page_patterns:
        assert isinstance(pattern, URLPattern)
        route = str(pattern.pattern)
        names = re.findall(r"<int:(\w+)>", route)
        values = path_ids(world, "/".join("{" + n + "}" for n in names))
        if "/model-versions/" in route:
            values["version_id"] = world.first.pk
        if "analyses" in route and analysis is not None:
            values["run_id"] = analysis.pk
        filled = fill(route, values, r"<int:(\w+)>")
        # An alias name (production pages): the world's production alias.
        urls.append("/" + filled.replace("<path:alias>", "production"))
    return urls


def api_urls(world: World, client: Client) -> list[str]:
    schema = client.get("/api/schema/", {"format": "json"}).json()
    urls = []
    for route, item in schema["paths"].items():
        if "get" not in item:
            continue
        values = path_ids(world, route)
        urls.append(fill(route, values, r"\{(\w+)\}"))
    return urls


def leaks(body: str) -> list[str]:
    return [directory for directory in server_dirs() if directory in body]


def test_no_page_or_api_answer_shows_a_server_path(exposed: World) -> None:
    client = Client()
    lead: User = exposed.owner
    client.force_login(lead)
    shown: dict[str, Any] = {}
    found: list[str] = []

    for url in page_urls(exposed) + api_urls(exposed, client):
        response = client.get(url)
        body = response.getvalue().decode(errors="replace")
        shown[url] = response.status_code
        found += [f"{url} ({response.status_code}) shows {d}" for d in leaks(body)]

    assert not found, "\n".join(found)
    # The crawl reached the pages that show the stored failures, not only refusals.
    reached = [url for url, code in shown.items() if code == 200]
    assert len(reached) > 40
    for page in (
        f"/projects/{exposed.project.pk}/training-jobs/{exposed.queued_job.pk}/",
        f"/projects/{exposed.project.pk}/evaluations/{exposed.eval_run.pk}/",
        f"/api/projects/{exposed.project.pk}/evaluations/{exposed.eval_run.pk}/",
    ):
        assert shown[page] == 200, page


def test_a_server_path_keeps_its_name_inside_its_store_and_loses_the_rest() -> None:
    artifacts = Path(settings.FTPORTAL_ARTIFACTS_DIR)
    cache = Path(settings.FTPORTAL_MODEL_CACHE)
    text = f"No such file: '{artifacts / 'adapters/job-3/checkpoint-2'}'; cache {cache}/x.json"

    shown = without_server_paths(text)

    assert shown == "No such file: 'artifacts/adapters/job-3/checkpoint-2'; cache models/x.json"
    # Only whole directory names: a sibling that merely starts the same way is not touched.
    sibling = f"{artifacts}-old/file"
    assert without_server_paths(sibling) == sibling
