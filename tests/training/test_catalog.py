"""The base-model catalog: seeded with sourced defaults, edited by admins, read by members."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from catalog.models import BaseModel
from ftportal.roles import Role
from registry.services import model_version_register
from tests.factories import frozen_version
from training.models import JobStatus, TrainingJob

pytestmark = pytest.mark.django_db


def test_the_seeded_openai_rows_name_their_source_dates_and_prices():
    row = BaseModel.objects.get(key="gpt-4o-mini-2024-07-18")
    assert row.deprecated_at == datetime.date(2027, 1, 6)
    assert row.retires_at is None  # no shutdown date announced
    prices = (
        row.training_usd_per_million_tokens,
        row.input_usd_per_million_tokens,
        row.output_usd_per_million_tokens,
    )
    assert prices == (Decimal("3.00"), Decimal("0.30"), Decimal("1.20"))
    assert "OpenAI" in row.source and "2027-01-06" in row.source


def test_an_admin_edits_the_catalog_and_others_cannot(client, make_member):
    admin_user = User.objects.create_superuser("root", "root@example.com", "pw")
    row = BaseModel.objects.get(key="gpt-4.1-mini-2025-04-14")
    url = reverse("admin:catalog_basemodel_change", args=[row.pk])
    form = {
        "key": row.key,
        "display_name": row.display_name,
        "provider": row.provider,
        # Hosted rows are bound to a registered endpoint (the seeded "openai" one).
        "endpoint": row.endpoint_id,
        "source": "checked again",
        "deprecated_at": "2027-01-06",
        "retires_at": "2027-06-30",
        "tokenizer": row.tokenizer,
        "context_window": row.context_window,
        "training_usd_per_million_tokens": "5.0000",
        "input_usd_per_million_tokens": "0.8000",
        "output_usd_per_million_tokens": "3.2000",
    }
    client.force_login(make_member(Role.ML_LEAD))
    assert client.post(url, form).status_code == 302  # to the admin login: not staff
    row.refresh_from_db()
    assert row.retires_at is None

    client.force_login(admin_user)
    response = client.post(url, form)
    assert response.status_code == 302, response.content[:2000]
    row.refresh_from_db()
    assert row.retires_at == datetime.date(2027, 6, 30) and row.source == "checked again"


def test_the_catalog_page_lists_versions_whose_base_model_goes_away(client, project, make_member):
    lead = make_member(Role.ML_LEAD)
    row = BaseModel.objects.get(key="gpt-4o-mini-2024-07-18")
    row.retires_at = timezone.localdate() + datetime.timedelta(days=10)
    row.save()
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=row,
        provider=row.provider,
        hyperparameters={},
        model_name="<b>triage</b>",
        created_by=lead,
        status=JobStatus.SUCCEEDED,
    )
    model_version_register(job=job, checkpoint=None, fine_tuned_model="ft:x")
    client.force_login(make_member(Role.MANAGER))

    page = client.get(reverse("base_model_catalog", args=[project.pk])).content.decode()

    assert "&lt;b&gt;triage&lt;/b&gt; v1" in page and "<b>triage</b>" not in page
    assert f"shuts down on {row.retires_at}: this version stops working" in page
    registry = client.get(reverse("model_list", args=[project.pk])).content.decode()
    assert 'id="endangered-versions"' in registry
    assert f"shuts down on {row.retires_at}" in registry


def test_a_local_catalog_row_can_name_its_own_weights(tmp_path, settings):
    from catalog.weights import base_model_dir, prepared_model_dir
    from providers.base import ProviderError
    from providers.local.weights import gguf_cache_key

    settings.FTPORTAL_MODEL_CACHE = tmp_path / "cache"
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    row = BaseModel(key="mine", display_name="Mine", provider="local", weights_path=str(model_dir))
    assert base_model_dir(row) == prepared_model_dir(row) == model_dir  # used as it is

    gguf = tmp_path / "Tiny-Model.Q8_0.gguf"
    gguf.write_bytes(b"GGUF")
    row.weights_path = str(gguf)
    # The web process only looks where the worker will convert it; nothing is converted here.
    assert prepared_model_dir(row) == tmp_path / "cache" / gguf_cache_key(gguf)
    assert not (tmp_path / "cache").exists()

    row.weights_path = str(tmp_path / "missing")
    with pytest.raises(ProviderError, match="neither a model directory"):
        base_model_dir(row)
