"""The whole loop in a real browser: import, review by keyboard, freeze, train, evaluate, promote,
roll back. The worker is a real Celery process and trains SmolLM2-135M for a few steps on CPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import FilePayload, Page, Request, expect

from datasets.models import Dataset, DatasetVersion, Example, ReviewAction, ReviewDecision
from evaluation.models import EvalRun
from ftportal.roles import Role
from registry.models import AliasChange, AliasChangeKind, ModelVersion
from training.models import TrainingJob

from .conftest import chart_state, login

pytestmark = [pytest.mark.e2e, pytest.mark.worker]

# The first job converts the GGUF base model once (about 20 s), then trains for seconds; an idle
# machine finishes each stage well within a minute, a busy CI runner can take several.
FINISH_TIMEOUT_MS = 300_000
FINISHED = ["Succeeded", "Failed", "Cancelled"]
SYSTEM = "Triage the support ticket. Answer with JSON: category and priority."
XSS = "<script>window.__xss=1</script>"
XSS_TICKET = f"The printer page shows {XSS} instead of my order."

TICKETS = [
    ("I was charged twice for my subscription this month.", "billing", "high"),
    ("How do I change the email address on my account?", "account", "low"),
    ("The app crashes when I open the settings page.", "bug", "high"),
    ("Can you add a dark mode?", "feature_request", "low"),
    ("My invoice shows the wrong company name.", "billing", "medium"),
    (XSS_TICKET, "bug", "medium"),
    ("I cannot log in after resetting my password.", "account", "high"),
    ("Export to CSV would be great.", "feature_request", "low"),
    ("My refund has not arrived after two weeks.", "billing", "high"),
    ("Search results load very slowly.", "bug", "medium"),
    ("Please delete my account and all my data.", "account", "medium"),
    ("Could the dashboard show weekly totals?", "feature_request", "low"),
    ("The discount code was not applied at checkout.", "billing", "medium"),
    ("Uploading a photo fails with error 500.", "bug", "high"),
    ("How do I turn on two-factor authentication?", "account", "low"),
    ("Please add keyboard shortcuts to the editor.", "feature_request", "low"),
]
EDITED_ANSWER = '{"category": "billing", "priority": "low"}'


def ticket_line(question: str, category: str, priority: str) -> str:
    answer = json.dumps({"category": category, "priority": priority})
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]
    return json.dumps({"messages": messages})


def jsonl_file(name: str, lines: list[str]) -> FilePayload:
    return {"name": name, "mimeType": "application/jsonl", "buffer": "\n".join(lines).encode()}


def shot(page: Page, directory: Path, name: str) -> None:
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


# --- review by keyboard -----------------------------------------------------------------------


def card_example_id(page: Page) -> int:
    return int(page.locator("article.example").get_attribute("data-example-id") or 0)


# htmx 2 wires up swapped-in content only when it settles, 20 ms after the swap. A key pressed
# in between clicks a button of a form htmx does not handle yet: the browser submits it as a
# plain GET to the page itself and the decision is silently lost. Wait as a reviewer's eye would.
NEXT_CARD_READY_JS = """(previousId) => {
  const card = document.querySelector('#review-card');
  if (card.matches('.htmx-request, .htmx-swapping, .htmx-settling')) return false;
  const example = card.querySelector('article.example');
  return example === null || example.dataset.exampleId !== String(previousId);
}"""


def wait_for_card_after(page: Page, example_id: int) -> None:
    """HTMX swaps in the next card (or the empty queue) once the decision is saved."""
    page.wait_for_function(NEXT_CARD_READY_JS, arg=example_id)
    assert "/review/" in page.url and "?" not in page.url, f"the page navigated to {page.url}"


def decide_by_key(page: Page, key: str) -> int:
    example_id = card_example_id(page)
    page.keyboard.press(key)
    wait_for_card_after(page, example_id)
    return example_id


def edit_by_keyboard(page: Page, new_answer: str) -> int:
    example_id = card_example_id(page)
    page.keyboard.press("e")
    answer = page.locator("#edit-answer")
    expect(answer).to_be_visible()
    expect(answer).to_be_focused()
    page.keyboard.press("Control+a")
    page.keyboard.type(new_answer)
    page.keyboard.press("Control+Enter")
    wait_for_card_after(page, example_id)
    return example_id


# --- training jobs ----------------------------------------------------------------------------

WATCH_JOB_JS = """() => {
  window.__jobPageLoaded = true;
  const read = () => {
    const status = document.querySelector('#job-status-value');
    const progress = document.querySelector('#job-progress');
    if (!status || !progress) return null;
    return `${status.textContent.trim()} · ${progress.textContent.trim()}`;
  };
  window.__jobSeen = [read()];
  new MutationObserver(() => {
    const now = read();
    if (now && window.__jobSeen[window.__jobSeen.length - 1] !== now) window.__jobSeen.push(now);
  }).observe(document.body, {childList: true, subtree: true});
}"""

STATUS_IN_JS = """([selector, wanted]) => {
  const element = document.querySelector(selector);
  return element !== null && wanted.includes(element.textContent.trim());
}"""


STEPPED_OR_FINISHED_JS = """(finished) => {
  const progress = document.querySelector('#job-progress').textContent;
  const status = document.querySelector('#job-status-value').textContent.trim();
  return /step [1-9]/.test(progress) || finished.includes(status);
}"""


# htmx keeps its per-element state under this property once it has processed an element.
HTMX_PROCESSED_JS = """(selector) => {
  const element = document.querySelector(selector);
  return Boolean(element && element["htmx-internal-data"]);
}"""


def start_training(page: Page, *, epochs: int, max_steps: int, batch_size: int) -> None:
    form = page.locator("#train-form")  # loaded into the version page by htmx
    estimate = page.locator("#estimate-tokens")
    expect(estimate).to_contain_text("x 3 epochs")  # the guide's default
    # Typing before htmx has wired up the swapped-in form would send no estimate request.
    page.wait_for_function(HTMX_PROCESSED_JS, arg="#train-form")
    form.get_by_label("Epochs").fill(str(epochs))
    # The estimate follows the form without a reload.
    expect(estimate).to_contain_text(f"x {epochs} epochs")
    expect(page.locator("#launch-warnings")).to_contain_text("insufficient data")
    form.locator("#advanced-hyperparameters summary").click()
    form.get_by_label("Batch size").fill(str(batch_size))
    form.get_by_label("Max steps").fill(str(max_steps))
    form.get_by_role("button", name="Start training").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Training job \d+$"))).to_be_visible()


def wait_until_finished(page: Page, status_selector: str) -> str:
    page.wait_for_function(
        STATUS_IN_JS, arg=[status_selector, FINISHED], timeout=FINISH_TIMEOUT_MS, polling=500
    )
    return page.locator(status_selector).inner_text().strip()


def job_from_url(page: Page) -> TrainingJob:
    match = re.search(r"/training-jobs/(\d+)/$", page.url)
    assert match, page.url
    return TrainingJob.objects.get(pk=int(match.group(1)))


def error_text(page: Page, container: str) -> str:
    errors = page.locator(f"{container} pre.error")
    return errors.inner_text() if errors.count() else "(no error shown)"


# A tiny model trained for a few steps on 13 examples: the lead accepts a wide margin, as the
# two validation items cannot show more.
MARGIN_POINTS = "50"
ALLOWED_VERDICT = re.compile(r"^(better|no worse than the margin)$")


def promote_on_evidence(
    page: Page, version: ModelVersion, run: EvalRun, *, reason: str, shots: Path
) -> None:
    """From the registry: open the confirmation page, read the gate's evidence, set the margin,
    give the reason and promote."""
    page.locator(f"#promote-{version.pk}").click()
    expect(page.get_by_role("heading", name=f"Promote {version} to production")).to_be_visible()
    evidence = page.locator("#promotion-evidence")
    expect(evidence).to_contain_text(f"Evaluation {run.pk}")
    expect(page.locator("#evidence-scores")).to_contain_text(re.compile(r"\d+\.\d %.*\d+\.\d %"))
    expect(page.locator("#evidence-costs")).to_contain_text(re.compile(r"\$\d+\.\d{4}.*\$\d"))
    page.get_by_label("Margin you accept").fill(MARGIN_POINTS)
    page.get_by_role("button", name="Show the verdict at this margin").click()
    expect(page.locator("#evidence-verdict")).to_have_text(ALLOWED_VERDICT)
    shot(page, shots, f"promote-v{version.number}")
    page.get_by_label("Reason").fill(reason)
    page.get_by_role("button", name=f"Promote {version}").click()
    expect(page.locator(".messages")).to_contain_text(f"{version} is now production.")


def test_a_team_takes_ticket_triage_from_a_jsonl_file_to_a_rolled_back_production_model(
    live_server, page: Page, project, make_member, base_model, celery_worker_process, tmp_path
) -> None:
    lead = make_member(Role.ML_LEAD)
    reviewer = make_member(Role.REVIEWER)
    dataset = Dataset.objects.create(project=project, name="tickets")

    # --- import: a broken file is refused whole, with the line and the reason -----------------
    login(page, live_server, lead.username)
    page.get_by_role("link", name="Ticket triage").click()
    page.get_by_role("link", name="tickets", exact=True).click()
    expect(page.get_by_role("heading", name="tickets")).to_be_visible()

    broken = [ticket_line(*TICKETS[0]), ticket_line(*TICKETS[1]), '{"messages": [', ""]
    page.locator("input[name=file]").set_input_files(jsonl_file("tickets-broken.jsonl", broken))
    page.get_by_role("button", name="Import").click()
    error = page.locator("#import-error")
    expect(error).to_contain_text(
        "tickets-broken.jsonl: 1 line(s) have errors; nothing was imported."
    )
    expect(error.locator("tbody tr")).to_have_count(1)
    expect(error.locator("tbody tr td").nth(0)).to_have_text("3")
    expect(error.locator("tbody tr td").nth(2)).to_contain_text("invalid JSON")
    expect(page.locator("#count-pending")).to_have_text("0 pending")
    shot(page, tmp_path, "import-refused")
    assert Example.objects.filter(dataset=dataset).count() == 0

    # --- import: the clean file -------------------------------------------------------------
    clean = [ticket_line(*ticket) for ticket in TICKETS]
    page.locator("input[name=file]").set_input_files(jsonl_file("tickets.jsonl", clean))
    page.get_by_role("button", name="Import").click()
    expect(page.locator(".messages")).to_contain_text("Imported 16 example(s) from tickets.jsonl.")
    expect(page.locator("#count-pending")).to_have_text("16 pending")
    examples = list(Example.objects.filter(dataset=dataset).order_by("id"))
    assert len(examples) == 16

    # --- review: a domain expert works through the queue with the keyboard ---------------------
    login(page, live_server, reviewer.username)
    page.get_by_role("link", name="Ticket triage").click()
    page.get_by_role("link", name="Review", exact=True).click()
    expect(page.get_by_role("heading", name="Review: tickets")).to_be_visible()
    page.evaluate("() => { window.__reviewPageLoaded = true; }")
    counts = page.locator("#review-counts")
    expect(counts).to_have_text("16 pending · 0 approved · 0 rejected")

    approved_ids = [decide_by_key(page, "a") for _ in range(3)]
    expect(counts).to_have_text("13 pending · 3 approved · 0 rejected")
    rejected_id = decide_by_key(page, "r")
    expect(page.locator("#last-decision")).to_have_text(f"Example {rejected_id}: rejected.")
    expect(counts).to_have_text("12 pending · 3 approved · 1 rejected")
    edited_id = edit_by_keyboard(page, EDITED_ANSWER)
    last_decision = page.locator("#last-decision")
    expect(last_decision).to_have_text(f"Example {edited_id}: edited and approved.")
    expect(counts).to_have_text("11 pending · 4 approved · 1 rejected")

    # The next card carries markup in the ticket: it must show as text and never run.
    xss_example = examples[5]
    assert card_example_id(page) == xss_example.pk
    expect(page.locator("li.role-user pre.content")).to_have_text(XSS_TICKET)
    assert page.evaluate("() => window.__xss") is None
    shot(page, tmp_path, "review-card-with-markup")

    while page.locator("article.example").count():
        approved_ids.append(decide_by_key(page, "a"))
    expect(page.locator("#queue-empty")).to_have_text("Nothing left to review in this dataset.")
    expect(counts).to_have_text("0 pending · 15 approved · 1 rejected")
    assert page.evaluate("() => window.__reviewPageLoaded") is True  # all of it without a reload
    assert page.evaluate("() => window.__xss") is None

    decisions = {d.example_id: d for d in ReviewDecision.objects.all()}
    assert len(decisions) == 16
    assert {d.reviewer_id for d in decisions.values()} == {reviewer.pk}
    assert {decisions[pk].action for pk in approved_ids} == {ReviewAction.APPROVE}
    assert len(approved_ids) == 14
    assert decisions[rejected_id].action == ReviewAction.REJECT
    assert decisions[edited_id].action == ReviewAction.EDIT
    assert decisions[edited_id].previous_answer == '{"category": "billing", "priority": "medium"}'
    assert decisions[edited_id].new_answer == EDITED_ANSWER
    assert Example.objects.get(pk=edited_id).messages[-1]["content"] == EDITED_ANSWER

    # A fresh page load of the markup example escapes it too.
    page.goto(f"{page.url.split('?')[0]}?example={xss_example.pk}")
    expect(page.locator("li.role-user pre.content")).to_have_text(XSS_TICKET)
    assert page.evaluate("() => window.__xss") is None

    # --- freeze: the ML lead snapshots the approved examples -----------------------------------
    login(page, live_server, lead.username)
    page.get_by_role("link", name="Ticket triage").click()
    page.get_by_role("link", name="tickets", exact=True).click()
    page.get_by_label("Validation fraction").fill("0.15")
    page.get_by_role("button", name="Freeze version").click()
    expect(page.get_by_role("heading", name="tickets v1")).to_be_visible()
    version = DatasetVersion.objects.get(dataset=dataset)
    assert re.fullmatch(r"[0-9a-f]{64}", version.content_hash)
    expect(page.locator("#version-hash")).to_have_text(version.content_hash)
    assert (version.example_count, version.train_count, version.validation_count) == (15, 13, 2)
    expect(page.locator(".facts")).to_contain_text("15 (13 train / 2 validation)")

    # --- train: the job page follows the worker by itself --------------------------------------
    polls: list[str] = []

    def count_poll(request: Request) -> None:
        if request.headers.get("hx-request") == "true" and "/training-jobs/" in request.url:
            polls.append(request.url)

    page.on("request", count_poll)
    start_training(page, epochs=1, max_steps=3, batch_size=4)
    job_url = page.url
    page.evaluate(WATCH_JOB_JS)
    page.wait_for_function(STEPPED_OR_FINISHED_JS, arg=FINISHED, timeout=FINISH_TIMEOUT_MS)
    shot(page, tmp_path, "job-in-progress")
    status = wait_until_finished(page, "#job-status-value")
    assert status == "Succeeded", error_text(page, "#job-status")
    page.remove_listener("request", count_poll)

    seen: list[str] = page.evaluate("() => window.__jobSeen")
    assert page.url == job_url
    assert page.evaluate("() => window.__jobPageLoaded") is True  # updated in place, no reload
    assert polls, "the job page never polled"
    assert seen[0].startswith(("Queued", "Validating", "Running")), seen
    assert seen[-1] == "Succeeded · step 3 of 3", seen
    assert len(set(seen)) >= 2, seen
    loss = chart_state(page, 'canvas[data-chart="loss-chart-data"]')
    assert loss["datasets"][0]["label"] == "Training loss"
    assert [step for step, _ in loss["datasets"][0]["points"]] == [1, 2, 3]  # one per step
    job1 = job_from_url(page)
    v1 = ModelVersion.objects.get(training_job=job1)
    assert v1.number == 1 and v1.dataset_hash == version.content_hash
    expect(page.locator("#job-result")).to_contain_text("tickets-ft v1")
    # The worker's measured setup and how much of its peak the job used.
    assert job1.precision in ("fp32", "bf16")
    expect(page.locator("#job-precision")).to_have_text(job1.precision)
    assert job1.model_flops_utilization is not None and 0 < job1.model_flops_utilization < 1
    expect(page.locator("#job-speed")).to_contain_text(
        re.compile(
            rf"model FLOP utilisation \d+\.\d %\s+of the worker's measured peak in {job1.precision}"
        )
    )
    assert job1.events.filter(message__startswith=f"Training in {job1.precision} with").exists()
    shot(page, tmp_path, "job-succeeded")

    # --- evaluate: fine-tuned against its base model on the validation split -------------------
    page.get_by_role("button", name="Evaluate against the base model").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Evaluation \d+$"))).to_be_visible()
    eval_status = wait_until_finished(page, "#eval-status")
    assert eval_status == "Succeeded", error_text(page, "#eval-body")
    run = EvalRun.objects.order_by("-pk").first()
    assert run is not None
    candidates = list(run.candidates.all())
    summary_rows = page.locator("#eval-summary tbody tr")
    expect(summary_rows).to_have_count(len(candidates))
    expect(summary_rows.nth(0)).to_contain_text("tickets-ft v1 (fine-tuned)")
    expect(summary_rows.nth(1)).to_contain_text("SmolLM2-135M-Instruct (zero-shot)")
    percent = re.compile(r"^\d+\.\d %$")
    for row in range(len(candidates)):
        for metric in ("exact_match", "token_f1", "rouge_l", "chrf"):
            expect(summary_rows.nth(row).locator(f'td[data-metric="{metric}"]')).to_have_text(
                percent
            )
    assert all(c.example_count == version.validation_count for c in candidates)
    # One verdict per comparison with the fine-tuned version, in words.
    expect(page.locator("#verdicts li")).to_have_count(len(candidates) - 1)
    side_rows = page.locator("table.side-by-side tbody tr")
    expect(side_rows).to_have_count(version.validation_count)
    for row in range(version.validation_count):
        # #, prompt, reference, then one output per candidate
        expect(side_rows.nth(row).locator("td")).to_have_count(3 + len(candidates))
    shot(page, tmp_path, "evaluation")

    # --- registry: promote v1 on the evidence of that evaluation (against its base model) -------
    page.get_by_role("link", name="Ticket triage").click()
    page.get_by_role("link", name="Model registry").click()
    registered = v1.registered_model
    production = page.locator(f"#production-{registered.pk}")
    expect(production).to_have_text("none")
    promote_on_evidence(
        page, v1, run, reason="beats its base model on the validation split", shots=tmp_path
    )
    expect(page.locator(".messages")).to_contain_text("tickets-ft v1 is now production.")
    expect(production).to_have_text("v1")

    page.goto(f"{live_server.url}/projects/{project.pk}/dataset-versions/{version.pk}/")
    start_training(page, epochs=1, max_steps=2, batch_size=4)
    status = wait_until_finished(page, "#job-status-value")
    assert status == "Succeeded", error_text(page, "#job-status")
    expect(page.locator("#job-progress")).to_have_text("step 2 of 2")
    v2 = ModelVersion.objects.get(training_job=job_from_url(page))
    assert (v2.registered_model_id, v2.number) == (registered.pk, 2)

    # --- the gate: v2 has no evaluation against production, so it cannot be promoted yet -------
    page.get_by_role("link", name="tickets-ft v2").click()
    expect(page.get_by_role("heading", name="Model registry")).to_be_visible()
    page.locator(f"#promote-{v2.pk}").click()
    expect(page.locator("#evidence-missing")).to_contain_text(
        "No finished evaluation of tickets-ft v2 against production tickets-ft v1 on the same "
        "test set"
    )
    expect(page.locator("#promote-confirm")).to_have_count(0)
    shot(page, tmp_path, "promotion-refused")
    page.get_by_role("link", name="Back to the model registry").click()
    page.locator(f"#evaluate-{v2.pk}").click()  # the registry's Evaluate includes production
    assert wait_until_finished(page, "#eval-status") == "Succeeded", error_text(page, "#eval-body")
    expect(page.locator("#eval-summary tbody tr").nth(1)).to_contain_text(
        "tickets-ft v1 (production)"
    )
    run2 = EvalRun.objects.order_by("-pk").first()
    assert run2 is not None
    page.get_by_role("link", name="Ticket triage").click()
    page.get_by_role("link", name="Model registry").click()
    promote_on_evidence(page, v2, run2, reason="as good as v1 with less training", shots=tmp_path)
    expect(production).to_have_text("v2")

    page.locator(f"#rollback-reason-{registered.pk}").fill("complaints since v2")
    page.get_by_role("button", name="Roll back to v1").click()
    expect(page.locator(".messages")).to_contain_text("Rolled production back to tickets-ft v1.")
    expect(production).to_have_text("v1")
    expect(page.locator(f"#version-{v1.pk}")).to_contain_text("production")

    history = page.locator("#alias-history tbody tr")
    expect(history).to_have_count(3)
    newest_first = [
        [cell.strip() for cell in history.nth(i).locator("td").all_inner_texts()] for i in range(3)
    ]
    # Columns: when, model, change, from, to, who, reason, evidence.
    assert [row[2:7] for row in newest_first] == [
        ["Rolled back production", "v2", "v1", lead.username, "complaints since v2"],
        ["Promoted production", "v1", "v2", lead.username, "as good as v1 with less training"],
        [
            "Promoted production",
            "—",
            "v1",
            lead.username,
            "beats its base model on the validation split",
        ],
    ]
    assert f"evaluation {run2.pk}" in newest_first[1][7]
    assert f"evaluation {run.pk}" in newest_first[2][7]
    changes = list(
        AliasChange.objects.order_by("id").values_list("kind", "changed_by", "overridden")
    )
    assert changes == [
        (AliasChangeKind.PROMOTE, lead.pk, False),
        (AliasChangeKind.PROMOTE, lead.pk, False),
        (AliasChangeKind.ROLLBACK, lead.pk, False),
    ]
    shot(page, tmp_path, "registry-after-rollback")
