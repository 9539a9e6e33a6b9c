"""The data migrations that moved stored URLs and key variables onto registered endpoints
(catalog 0001/0002, training 0009, evaluation 0004), and the move of the base-model catalog
from training to catalog (catalog 0003, training 0010), run on rows written through the
historical models: each stored row ends where the migrations promise, and the worker refuses
what they left without an endpoint.

Each test migrates the shared test database back (to before the catalog, or before the move)
and forward again; it always ends at the latest migrations, as every other test expects.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from django.apps.registry import Apps
from django.contrib.auth.models import User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from catalog.models import BaseModel, Endpoint, EndpointKind
from catalog.rules import default_base_url
from catalog.secrets import endpoint_credentials
from evaluation.models import Candidate, EvalRun
from evaluation.runner import _judge_chat, chat_for
from ftportal.models import Project
from providers.base import ProviderError
from tests.factories import frozen_version

pytestmark = pytest.mark.django_db(transaction=True)

# Where training and evaluation stood before the catalog existed.
BEFORE = [("training", "0008_job_compute_seconds"), ("evaluation", "0003_candidate_constrained")]
SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")


def _migrate(targets: Sequence[tuple[str, str | None]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


@pytest.fixture
def old_apps() -> Iterator[Apps]:
    """The historical models with the catalog unapplied (so training 0009 and evaluation 0004
    too); afterwards the database is back at every app's latest migration."""
    _migrate([("catalog", None)])
    try:
        yield MigrationExecutor(connection).loader.project_state(BEFORE).apps
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def _migrate_forward() -> None:
    _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def _historical(old_apps: Apps, app: str, model: str) -> Any:
    """A model as it stood then (typed loosely: its fields are not today's)."""
    return old_apps.get_model(app, model)


def _hosted_row(old_apps: Apps, key: str, api_base_url: str = "") -> Any:
    return _historical(old_apps, "training", "BaseModel").objects.create(
        key=key, display_name=key, provider="openai", api_base_url=api_base_url
    )


def test_the_seeded_endpoints_exist_after_the_catalog_migrations(old_apps: Apps) -> None:
    _migrate_forward()
    seeded = {e.name: (e.kind, e.base_url, e.secret_env) for e in Endpoint.objects.all()}
    assert seeded == {
        "openai": (EndpointKind.OPENAI, "", "OPENAI_API_KEY"),
        "anthropic": (EndpointKind.ANTHROPIC, "", "ANTHROPIC_API_KEY"),
    }


def test_a_hosted_base_model_without_a_url_is_bound_to_the_seeded_openai_endpoint(
    old_apps: Apps,
) -> None:
    _hosted_row(old_apps, "gpt-test-default")
    local = _historical(old_apps, "training", "BaseModel").objects.create(
        key="local-test", display_name="local", provider="local"
    )
    _migrate_forward()

    row = BaseModel.objects.get(key="gpt-test-default")
    assert row.endpoint is not None and row.endpoint.name == "openai"
    credentials = endpoint_credentials(row.endpoint, model=row.key, who="test")
    # What the blank URL meant before: the operator's OPENAI_BASE_URL, else OpenAI's API.
    assert credentials.base_url == default_base_url("openai")
    assert credentials.api_key == os.environ["OPENAI_API_KEY"]
    assert BaseModel.objects.get(pk=local.pk).endpoint is None


def test_a_hosted_base_model_with_its_own_url_gets_its_own_endpoint_with_the_openai_key(
    old_apps: Apps,
) -> None:
    _hosted_row(old_apps, "gpt-test-own", "https://llm.acme.example/v1")
    _migrate_forward()

    row = BaseModel.objects.get(key="gpt-test-own")
    assert row.endpoint is not None
    assert row.endpoint.name != "openai"
    assert SLUG.match(row.endpoint.name)
    assert (row.endpoint.kind, row.endpoint.base_url, row.endpoint.secret_env) == (
        EndpointKind.OPENAI_COMPATIBLE,
        "https://llm.acme.example/v1",
        "OPENAI_API_KEY",
    )
    row.endpoint.full_clean()  # an admin can open and save it as it is
    credentials = endpoint_credentials(row.endpoint, model=row.key, who="test")
    assert credentials.base_url == "https://llm.acme.example/v1"
    assert credentials.api_key == os.environ["OPENAI_API_KEY"]


def test_own_url_endpoints_are_named_as_slugs_and_each_keeps_its_own_url(old_apps: Apps) -> None:
    """A server's model id may hold "/" or ":"; two ids may slug alike yet name different
    servers, and rows on one server share its endpoint."""
    _hosted_row(old_apps, "Qwen/Qwen2.5-7B:instruct", "https://vllm-a.example/v1")
    _hosted_row(old_apps, "Qwen-Qwen2-5-7B-instruct", "https://vllm-b.example/v1")
    _hosted_row(old_apps, "Qwen/Qwen2.5-0.5B", "https://vllm-a.example/v1")
    _migrate_forward()

    rows: dict[str, Endpoint] = {}
    for row in BaseModel.objects.filter(key__startswith="Qwen"):
        assert row.endpoint is not None, row.key
        rows[row.key] = row.endpoint
    for endpoint in rows.values():
        assert SLUG.match(endpoint.name), endpoint.name
        endpoint.full_clean()
    assert rows["Qwen/Qwen2.5-7B:instruct"].base_url == "https://vllm-a.example/v1"
    assert rows["Qwen-Qwen2-5-7B-instruct"].base_url == "https://vllm-b.example/v1"
    assert rows["Qwen/Qwen2.5-0.5B"] == rows["Qwen/Qwen2.5-7B:instruct"]


def _old_run(old_apps: Apps, *, judge_kind: str = "", **judge: str) -> Any:
    user = User.objects.create_user(username=f"lead-{User.objects.count()}", password="pw")
    project = Project.objects.get_or_create(name="Migrations")[0]
    version = frozen_version(project, user)
    return _historical(old_apps, "evaluation", "EvalRun").objects.create(
        project_id=project.pk,
        dataset_version_id=version.pk,
        created_by_id=user.pk,
        judge_kind=judge_kind,
        judge_model="judge-model" if judge_kind else "",
        **judge,
    )


def _old_candidate(old_apps: Apps, run: Any, position: int, kind: str, **fields: str) -> Any:
    return _historical(old_apps, "evaluation", "Candidate").objects.create(
        run=run, position=position, label=f"c{position}", kind=kind, api_model="m", **fields
    )


def test_candidates_on_the_providers_own_url_and_key_go_to_the_default_endpoint_of_their_kind(
    old_apps: Apps,
) -> None:
    run = _old_run(old_apps)
    openai = _old_candidate(old_apps, run, 0, "openai_compatible")
    anthropic = _old_candidate(old_apps, run, 1, "anthropic")
    # Naming the provider's own variable is using the provider's own key.
    openai_named = _old_candidate(
        old_apps, run, 2, "openai_compatible", api_key_env="OPENAI_API_KEY"
    )
    anthropic_named = _old_candidate(old_apps, run, 3, "anthropic", api_key_env="ANTHROPIC_API_KEY")
    base = _old_candidate(old_apps, run, 4, "base")
    _migrate_forward()

    endpoint_of = {c.pk: c.endpoint and c.endpoint.name for c in Candidate.objects.all()}
    assert endpoint_of == {
        openai.pk: "openai",
        anthropic.pk: "anthropic",
        openai_named.pk: "openai",
        anthropic_named.pk: "anthropic",
        base.pk: None,
    }


def test_candidates_that_named_their_own_url_or_variable_are_left_without_and_refused(
    old_apps: Apps,
) -> None:
    run = _old_run(old_apps)
    own_url = _old_candidate(
        old_apps, run, 0, "openai_compatible", api_base_url="http://attacker.example/v1"
    )
    own_key = _old_candidate(old_apps, run, 1, "openai_compatible", api_key_env="DJANGO_SECRET_KEY")
    own_anthropic_key = _old_candidate(old_apps, run, 2, "anthropic", api_key_env="HOME")
    both = _old_candidate(
        old_apps,
        run,
        3,
        "openai_compatible",
        api_base_url="http://llm.internal/v1",
        api_key_env="OPENAI_API_KEY",
    )
    _migrate_forward()

    for old in (own_url, own_key, own_anthropic_key, both):
        candidate = Candidate.objects.get(pk=old.pk)
        assert candidate.endpoint is None, candidate.label
        with pytest.raises(ProviderError, match=f"^{candidate.label}: no registered endpoint"):
            chat_for(candidate)


def test_judges_go_to_the_default_endpoint_only_when_they_used_the_providers_own(
    old_apps: Apps,
) -> None:
    openai = _old_run(old_apps, judge_kind="openai_compatible")
    anthropic = _old_run(old_apps, judge_kind="anthropic")
    named = _old_run(old_apps, judge_kind="anthropic", judge_key_env="ANTHROPIC_API_KEY")
    own_url = _old_run(old_apps, judge_kind="anthropic", judge_base_url="http://x.example")
    own_key = _old_run(old_apps, judge_kind="openai_compatible", judge_key_env="HOME")
    no_judge = _old_run(old_apps)
    _migrate_forward()

    endpoint_of = {r.pk: r.judge_endpoint and r.judge_endpoint.name for r in EvalRun.objects.all()}
    assert endpoint_of == {
        openai.pk: "openai",
        anthropic.pk: "anthropic",
        named.pk: "anthropic",
        own_url.pk: None,
        own_key.pk: None,
        no_judge.pk: None,
    }
    for left in (own_url, own_key):
        with pytest.raises(ProviderError, match="^The judge: no registered endpoint"):
            _judge_chat(EvalRun.objects.get(pk=left.pk))


# Where the catalog stood while training still owned BaseModel (issue 14 moved it).
BEFORE_MOVE = [
    ("catalog", "0002_default_endpoints"),
    ("training", "0009_base_model_endpoint"),
]


def test_moving_the_catalog_out_of_training_keeps_its_rows_and_admin_permissions() -> None:
    """The move changes Django's state only: rows keep their ids and fields, and a staff member
    allowed to edit the catalog under training still may under catalog."""
    _migrate(BEFORE_MOVE)
    try:
        before = MigrationExecutor(connection).loader.project_state(BEFORE_MOVE).apps
        row = _historical(before, "training", "BaseModel").objects.create(
            key="moved-model", display_name="Moved", provider="local"
        )
        permission = _historical(before, "auth", "Permission").objects.get(
            content_type__app_label="training", codename="change_basemodel"
        )
        editor = User.objects.create_user(username="catalog-editor", password="pw")
        editor.user_permissions.add(permission.pk)
    finally:
        _migrate_forward()

    moved = BaseModel.objects.get(pk=row.pk)
    assert (moved.key, moved.display_name, moved.provider) == ("moved-model", "Moved", "local")
    assert User.objects.get(pk=editor.pk).has_perm("catalog.change_basemodel")
