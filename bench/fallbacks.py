"""What fallback routes add to a gateway request's path, against what the request already does,
in a throwaway Postgres database:

    python bench/fallbacks.py [--calls 2000] [--repeats 7]

- baseline: resolving an alias name to its version (``serving.model_names.model_name_resolve``,
  which every alias request runs);
- route lookup: ``serving.fallbacks.fallback_route_of`` for the same name's alias, once for an alias
  without a route (every alias request pays it) and once for one with a route;
- the timeout: ``asyncio.wait_for`` (what the gateway bounds the primary's answer with) around
  a coroutine that returns at once, against awaiting it directly, both run to completion on one
  event loop (only requests whose alias has an enabled route pay it);
- the breaker: ``admit`` and ``succeeded`` for one backend (only routed requests).

Each repeat times ``--calls`` calls of each, in alternating order; medians of the repeats'
per-call means are printed in microseconds. The last line is key=value.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root

from bench.databases import in_scratch_django_database  # noqa: E402


def per_call_us(work: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - started) / calls * 1e6


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from catalog.models import BaseModel, Provider
    from datasets.models import Dataset, DatasetVersion
    from ftportal.models import Project
    from registry.models import Alias, ModelVersion, RegisteredModel
    from serving.breaker import CircuitBreakers
    from serving.fallbacks import fallback_route_of
    from serving.model_names import model_name_resolution, model_name_resolve
    from serving.services import RouteSettings, fallback_route_create
    from training.models import TrainingJob

    call_command("migrate", verbosity=0)
    user = User.objects.create_user(username="bench")
    project = Project.objects.create(name="Bench")
    base, _ = BaseModel.objects.get_or_create(
        key="bench-base", defaults={"display_name": "bench", "provider": Provider.OPENAI}
    )
    dataset = Dataset.objects.create(project=project, name="d")
    frozen = DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        content_hash="0" * 64,
        seed=1,
        validation_fraction=0.2,
        example_count=10,
        train_count=8,
        validation_count=2,
        created_by=user,
    )
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=frozen,
        base_model=base,
        provider=Provider.OPENAI,
        hyperparameters={},
        model_name="m",
        created_by=user,
    )
    aliases = {}
    for model_name in ("routed", "plain"):
        model = RegisteredModel.objects.create(project=project, name=model_name)
        versions = [
            ModelVersion.objects.create(
                registered_model=model,
                number=number,
                training_job=job,
                dataset_version=frozen,
                dataset_hash="0" * 64,
                base_model=base,
                hyperparameters={},
                fine_tuned_model=f"ft:{model_name}:{number}",
            )
            for number in (1, 2)
        ]
        aliases[model_name] = Alias.objects.create(
            registered_model=model, name="production", model_version=versions[1]
        )
        if model_name == "routed":
            fallback_route_create(
                alias=aliases[model_name],
                user=user,
                wanted=RouteSettings(fallback_version=versions[0], fallback_base_model=None),
            )
    plain, routed = "Bench/plain/production", "Bench/routed/production"
    plain_alias = model_name_resolution(project=project, name=plain).alias
    routed_alias = model_name_resolution(project=project, name=routed).alias
    assert plain_alias is not None and routed_alias is not None
    assert fallback_route_of(plain_alias) is None
    assert fallback_route_of(routed_alias) is not None
    breakers = CircuitBreakers()
    loop = asyncio.new_event_loop()

    async def answered_at_once() -> None:
        return None

    def breaker_round() -> None:
        breakers.admit("backend")
        breakers.succeeded("backend")

    timed: dict[str, Callable[[], object]] = {
        "resolve": lambda: model_name_resolve(project=project, name=plain),
        "lookup_none": lambda: fallback_route_of(plain_alias),
        "lookup_route": lambda: fallback_route_of(routed_alias),
        "direct": lambda: loop.run_until_complete(answered_at_once()),
        "timeout": lambda: loop.run_until_complete(asyncio.wait_for(answered_at_once(), 5.0)),
        "breaker": breaker_round,
    }
    samples: dict[str, list[float]] = {name: [] for name in timed}
    for repeat in range(args.repeats):
        order = list(timed) if repeat % 2 == 0 else list(reversed(timed))
        for name in order:
            samples[name].append(per_call_us(timed[name], args.calls))
    median = {name: statistics.median(values) for name, values in samples.items()}
    for name, value in median.items():
        print(f"{name:>13}: {value:9.1f} us per call (median of {args.repeats})")
    ratio = median["lookup_none"] / median["resolve"]
    timeout = median["timeout"] - median["direct"]
    print(f"route lookup / name resolution: {ratio:.2f}x")
    print(
        f"resolve_us={median['resolve']:.1f} lookup_no_route_us={median['lookup_none']:.1f} "
        f"lookup_route_us={median['lookup_route']:.1f} lookup_ratio={ratio:.2f} "
        f"timeout_us={timeout:.1f} breaker_us={median['breaker']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    in_scratch_django_database("ftportal_bench_fallbacks", lambda: run(args))


if __name__ == "__main__":
    main()
