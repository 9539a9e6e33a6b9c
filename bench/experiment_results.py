"""An experiment page's figures over generated traffic: the one aggregate query the page runs
(``serving.selectors.experiment_arm_results``) against reading every row into Python and
counting there (the loop the page must not do), over the same rows, in a throwaway database.

    python bench/experiment_results.py [--rows 200000] [--repeats 5]

Creates its own database next to DATABASE_URL's (default
postgres://postgres@127.0.0.1:5432/ftportal), migrates it, and generates ``--rows`` log rows
of a running experiment's two arms (hosted-baseline arms: no trained version is needed),
success events for 40 % and 60 % of them, feedback for one in ten, and as many rows of another
project, in Postgres itself. Then ANALYZE and the timed reads, alternating which goes first;
both must give the same counts. Medians are printed; the last line is key=value.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root

from bench.databases import in_scratch_django_database  # noqa: E402

ROWS_SQL = """
INSERT INTO serving_requestlog (
    project_id, request_id, requested_model, experiment_arm, arm_id, shadow_of, messages,
    output, status, error, latency_ms, prompt_tokens, completion_tokens, cost, cost_known,
    caller_user, redacted, created_at
)
SELECT %(project)s, %(prefix)s || lpad(to_hex(g), 28, '0'), 'bench/production',
    CASE WHEN g %% 2 = 0 THEN 'control' ELSE 'challenger' END,
    CASE WHEN %(arms)s THEN (CASE WHEN g %% 2 = 0 THEN %(control)s ELSE %(challenger)s END)
         ELSE NULL END,
    '', '[{"role": "user", "content": "hi"}]', 'ok',
    CASE WHEN g %% 100 = 0 THEN 'error' ELSE 'ok' END, '', 20 + g %% 80, 10, 5, NULL, false,
    'user-' || (g %% 5000), false, now() - make_interval(secs => g)
FROM generate_series(1, %(rows)s) AS g
"""
EVENTS_SQL = """
INSERT INTO serving_outcomeevent (project_id, request_id, name, value, created_at)
SELECT project_id, request_id, 'resolved', 1, now() FROM serving_requestlog
WHERE arm_id IS NOT NULL
  AND abs(hashtext(request_id)) % 100 < CASE WHEN experiment_arm = 'control' THEN 40 ELSE 60 END
"""
FEEDBACK_SQL = """
INSERT INTO serving_feedback (project_id, request_id, score, comment, correction, caller_user,
    created_at, updated_at)
SELECT project_id, request_id, (abs(hashtext(request_id)) % 5) / 4.0, '', '', '', now(), now()
FROM serving_requestlog WHERE arm_id IS NOT NULL AND abs(hashtext(request_id)) % 10 = 0
"""


def median_ms(read: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = read()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from catalog.models import BaseModel
    from ftportal.models import Project
    from registry.models import RegisteredModel
    from serving.models import (
        Experiment,
        ExperimentArm,
        ExperimentStatus,
        Feedback,
        OutcomeEvent,
        RequestLog,
    )
    from serving.selectors import experiment_arm_results

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    project = Project.objects.create(name="bench")
    other = Project.objects.create(name="other")
    model = RegisteredModel.objects.create(project=project, name="triage")
    base = BaseModel.objects.exclude(key="").first()
    assert base is not None, "the migrations seed the catalog's base models"
    experiment = Experiment.objects.create(
        project=project,
        name="bench",
        registered_model=model,
        alias="production",
        success_event="resolved",
        status=ExperimentStatus.RUNNING,
    )
    control = ExperimentArm.objects.create(
        experiment=experiment, name="control", position=0, base_model=base, weight=1
    )
    challenger = ExperimentArm.objects.create(
        experiment=experiment, name="challenger", position=1, base_model=base, weight=1
    )
    with connection.cursor() as cursor:
        for target, arms, prefix in ((project, True, "req_a"), (other, False, "req_b")):
            cursor.execute(
                ROWS_SQL,
                {
                    "project": target.pk,
                    "prefix": prefix,
                    "arms": arms,
                    "control": control.pk,
                    "challenger": challenger.pk,
                    "rows": args.rows,
                },
            )
        cursor.execute(EVENTS_SQL)
        cursor.execute(FEEDBACK_SQL)
        cursor.execute("ANALYZE")
    print(
        f"migrated and generated {RequestLog.objects.count():,} log rows, "
        f"{OutcomeEvent.objects.count():,} events, {Feedback.objects.count():,} feedback in "
        f"{time.perf_counter() - started:.1f} s (not timed)"
    )

    def aggregate() -> dict[str, tuple[int, int, int]]:
        fresh = Experiment.objects.get(pk=experiment.pk)
        return {
            r.arm.name: (r.requests, r.successes, r.feedback_count)
            for r in experiment_arm_results(fresh)
        }

    def python_loop() -> dict[str, tuple[int, int, int]]:
        # The baseline: every row of the experiment into Python, counted there.
        succeeded = set(
            OutcomeEvent.objects.filter(project=project, name="resolved").values_list(
                "request_id", flat=True
            )
        )
        scored = dict(Feedback.objects.filter(project=project).values_list("request_id", "score"))
        counts: dict[str, list[int]] = {}
        latencies: dict[str, list[int]] = {}
        rows = RequestLog.objects.filter(arm__experiment=experiment).values_list(
            "experiment_arm", "request_id", "latency_ms", "status"
        )
        for arm, request_id, latency, _status in rows.iterator(chunk_size=10_000):
            figures = counts.setdefault(arm, [0, 0, 0])
            figures[0] += 1
            figures[1] += request_id in succeeded
            figures[2] += request_id in scored
            latencies.setdefault(arm, []).append(latency)
        for values in latencies.values():
            values.sort()  # what the percentiles need
        return {arm: (c[0], c[1], c[2]) for arm, c in counts.items()}

    if args.explain:
        from serving.selectors import _ARM_RESULTS_SQL

        sql = _ARM_RESULTS_SQL.format(
            events="serving_outcomeevent", log="serving_requestlog", feedback="serving_feedback"
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "EXPLAIN ANALYZE " + sql,
                {
                    "error": "error",
                    "event": "resolved",
                    "project": project.pk,
                    "arms": [control.pk, challenger.pk],
                },
            )
            print("\n".join(row[0] for row in cursor.fetchall()))

    aggregate_times: list[float] = []
    loop_times: list[float] = []
    for repeat in range(args.repeats):
        order = [(aggregate, aggregate_times), (python_loop, loop_times)]
        for read, times in order if repeat % 2 == 0 else reversed(order):
            took, result = median_ms(read, 1)
            times.append(took)
            if read is aggregate:
                by_aggregate = result
            else:
                by_loop = result
    assert by_aggregate == by_loop, (by_aggregate, by_loop)
    page_ms, loop_ms = statistics.median(aggregate_times), statistics.median(loop_times)
    print(f"per arm (requests, successes, rated): {by_aggregate}")
    print(f"aggregate query: median {page_ms:.1f} ms over {args.repeats} runs")
    print(f"rows into Python: median {loop_ms:.1f} ms over {args.repeats} runs")
    print(
        f"rows={args.rows} aggregate_ms={page_ms:.1f} python_loop_ms={loop_ms:.1f} "
        f"speedup={loop_ms / page_ms:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--explain", action="store_true", help="print the aggregate's plan")
    args = parser.parse_args()
    if args.rows < 100 or args.repeats < 1:
        parser.error("--rows at least 100, --repeats at least 1")
    in_scratch_django_database("ftportal_bench_experiment", lambda: run(args))


if __name__ == "__main__":
    main()
