"""A CSV import in a real browser: upload, choose the columns, watch the background import finish
without reloading, and find the examples in the dataset."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from playwright.sync_api import FilePayload, Page, expect

from datasets.models import Dataset, Example, ImportBatch, ImportStatus
from ftportal.roles import Role

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.worker]

ROWS = 20_000
FINISH_TIMEOUT_MS = 180_000


def tickets_csv() -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "ticket text", "category", "team"])
    for n in range(ROWS):
        writer.writerow([n, f"Ticket {n}: the printer, again, is jammed", "hardware", f"t{n % 3}"])
    return buffer.getvalue().encode()


def test_a_csv_is_imported_with_columns_chosen_in_the_browser(
    live_server, page: Page, project, make_member, celery_worker_process, settings, tmp_path: Path
) -> None:
    # Big enough to go to the worker, so the page has to follow the import by itself.
    settings.FTPORTAL_SYNC_IMPORT_MAX_BYTES = 0
    reviewer = make_member(Role.REVIEWER)
    dataset = Dataset.objects.create(project=project, name="tickets")

    login(page, live_server, reviewer.username)
    page.get_by_role("link", name="Ticket triage").click()
    page.get_by_role("link", name="tickets", exact=True).click()
    page.locator("input[name=file]").set_input_files(
        FilePayload(name="tickets.csv", mimeType="text/csv", buffer=tickets_csv())
    )
    page.get_by_role("button", name="Import").click()

    # The header and the first rows, with the columns to choose.
    expect(page.get_by_role("heading", name="Choose the columns of tickets.csv")).to_be_visible()
    expect(page.locator("#csv-preview thead")).to_contain_text("ticket text")
    expect(page.locator("#csv-preview tbody tr")).to_have_count(5)
    page.get_by_label("Input column").select_option("ticket text")
    page.get_by_label("Ideal output column").select_option("category")
    page.get_by_label("Or one system prompt for every row").fill("Classify the ticket.")
    page.get_by_role("checkbox", name="team").check()
    page.screenshot(path=str(tmp_path / "import-columns.png"))
    page.get_by_role("button", name="Import tickets.csv").click()

    # The progress section polls until the worker is done; no reload happens meanwhile.
    expect(page.get_by_role("heading", name="Import of tickets.csv")).to_be_visible()
    page.evaluate("() => { window.__importPageLoaded = true; }")
    expect(page.locator("#import-result")).to_have_text(
        f"Imported {ROWS} example(s) from tickets.csv. Back to tickets",
        timeout=FINISH_TIMEOUT_MS,
    )
    assert page.evaluate("() => window.__importPageLoaded === true")
    expect(page.locator("#import-progress")).to_have_attribute("data-status", "succeeded")
    page.screenshot(path=str(tmp_path / "import-done.png"))

    batch = ImportBatch.objects.get(dataset=dataset)
    assert batch.status == ImportStatus.SUCCEEDED
    assert batch.options["csv"]["input_column"] == "ticket text"
    example = Example.objects.get(dataset=dataset, source_line=2)
    assert example.messages == [
        {"role": "system", "content": "Classify the ticket."},
        {"role": "user", "content": "Ticket 0: the printer, again, is jammed"},
        {"role": "assistant", "content": "hardware"},
    ]
    assert example.metadata == {"team": "t0"}

    page.get_by_role("link", name="Back to tickets").click()
    expect(page.locator("#count-pending")).to_have_text(f"{ROWS} pending")
    expect(page.get_by_role("link", name="tickets.csv")).to_be_visible()
