"""Review queue latency under load: 100,000 examples against a 1,000-example baseline.

    python bench/review_load.py [--requests 300] [--big 100000] [--small 1000]

Creates its own throwaway Postgres database (next to DATABASE_URL's, default
postgres://postgres@127.0.0.1:5432/ftportal), migrates it, bulk-loads two datasets with COPY,
starts the real server (gunicorn, 2 sync workers, DEBUG off) as a subprocess, logs in through
the login form and times, with one plain HTTP client session:

- next: the htmx partial GET that loads the next example of the queue (?after=<id>), walking
  the queue as a reviewer pressing "s" would;
- decide: the htmx POST that approves an example and answers with the next card;
- cpu (for information): the CPU time the server's worker spent on each of those requests
  (bench/review_load_wsgi.py adds it as a header), which other work on the machine hardly
  changes; the database's own time is not in it;
- floor (for information): the login page, which runs no review code: what any request costs
  on this machine at the time, since other work on a shared machine slows every figure;
- counts (for information): the separate request a queue of more than 20,000 examples makes
  for its status counts after the card has loaded (smaller queues count inline).

Both run against the big and the small dataset in the same run, alternating request by request
so that both see the same load on the machine; the last line is key=value
with p50/p95 in milliseconds and the big/small p95 ratios. Target: p95 <= 50 ms at 100k.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root

from bench.databases import scratch_database_create, scratch_database_drop  # noqa: E402

PASSWORD = "bench-pw"
WARMUP = 20
COUNTS_REQUESTS = 50
SERVER_START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_for(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "bench-only-secret",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        # Plain http on loopback, as scripts/run.sh serves it: with DEBUG off the site would
        # otherwise redirect to https (which gunicorn then reads as a garbled request line)
        # and mark its cookies Secure (so the login would not stick).
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_SECURE_COOKIES": "0",
        "DJANGO_SECURE_HSTS_SECONDS": "0",
    }


SEED = r"""
import django, sys
django.setup()
from django.contrib.auth.models import User
from ftportal.models import Membership, Project
from datasets.models import Dataset
user = User.objects.create_user(username="bench", password=sys.argv[1])
project = Project.objects.create(name="bench")
Membership.objects.create(project=project, user=user, role="reviewer")
big = Dataset.objects.create(project=project, name="big")
small = Dataset.objects.create(project=project, name="small")
print(project.pk, big.pk, small.pk)
"""

CATEGORIES = ["billing", "bug", "account", "feature_request"]


def messages_for(n: int) -> str:
    category = CATEGORIES[n % len(CATEGORIES)]
    return json.dumps(
        [
            {"role": "system", "content": "Triage the ticket. Reply with JSON only."},
            {"role": "user", "content": f"Ticket {n}: something about {category} went wrong."},
            {"role": "assistant", "content": json.dumps({"category": category})},
        ]
    )


def bulk_load(database_url: str, dataset_id: int, count: int) -> None:
    """COPY is the fast path for 100k rows; the ORM's bulk_create would take far longer."""
    # Every NOT NULL column without a database default: Django keeps defaults in Python.
    columns = (
        "dataset_id, messages, status, metadata, revision, origin_kind, import_pending,"
        " created_at, updated_at"
    )
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY datasets_example ({columns}) FROM STDIN") as copy:
            for n in range(count):
                metadata = json.dumps({"source": "mail" if n % 3 else "chat"})
                copy.write_row(
                    (dataset_id, messages_for(n), "pending", metadata, 0, "", False, "now", "now")
                )
        conn.commit()
    # A database in steady state has been vacuumed: the visibility map lets Postgres count
    # from the index alone.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE datasets_example")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Reviewer:
    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.cpu_ms: list[float] = []  # the server's CPU time of each timed request

    def _note_cpu(self, response: requests.Response) -> None:
        self.cpu_ms.append(float(response.headers.get("X-Server-Cpu-Ms", "nan")))

    def login(self) -> None:
        page = self.session.get(f"{self.base}/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, "no CSRF token on the login page"
        response = self.session.post(
            f"{self.base}/login/",
            data={"username": "bench", "password": PASSWORD, "csrfmiddlewaretoken": token[1]},
            headers={"Referer": f"{self.base}/login/"},
            allow_redirects=False,
        )
        assert response.status_code == 302, f"login failed: {response.status_code}"
        self.csrf: str = self.session.cookies.get("csrftoken") or ""

    def card_id(self, html: str) -> int:
        found = re.search(r'data-example-id="(\d+)"', html)
        return int(found[1]) if found else 0

    def next_card(self, project: int, dataset: int, after: int) -> tuple[float, int]:
        url = f"{self.base}/projects/{project}/datasets/{dataset}/review/"
        if after:  # ids are positive: the first card of the queue has no ?after at all
            url += f"?after={after}"
        start = time.perf_counter()
        response = self.session.get(url, headers={"HX-Request": "true"})
        elapsed = time.perf_counter() - start
        assert response.status_code == 200, response.status_code
        self._note_cpu(response)
        return elapsed, self.card_id(response.text)

    def floor(self) -> float:
        """The login page: no review code, for how fast this machine answers any request now."""
        start = time.perf_counter()
        response = self.session.get(f"{self.base}/login/")
        elapsed = time.perf_counter() - start
        assert response.status_code == 200, response.status_code
        self._note_cpu(response)
        return elapsed

    def counts(self, project: int, dataset: int) -> float:
        url = f"{self.base}/projects/{project}/datasets/{dataset}/review/counts/"
        start = time.perf_counter()
        response = self.session.get(url, headers={"HX-Request": "true"})
        elapsed = time.perf_counter() - start
        assert response.status_code == 200, response.status_code
        self._note_cpu(response)
        return elapsed

    def decide(self, project: int, example: int) -> tuple[float, int]:
        url = f"{self.base}/projects/{project}/examples/{example}/review/"
        start = time.perf_counter()
        response = self.session.post(
            url,
            data={"action": "approve", "revision": 0},
            headers={"HX-Request": "true", "X-CSRFToken": self.csrf, "Referer": self.base},
        )
        elapsed = time.perf_counter() - start
        assert response.status_code == 200, (response.status_code, response.text[:300])
        self._note_cpu(response)
        return elapsed, self.card_id(response.text)


def summary(times: list[float]) -> tuple[float, float]:
    return statistics.median(times) * 1000, percentile(times, 0.95) * 1000


def measure(
    reviewer: Reviewer, project: int, datasets: dict[str, int], requests_each: int
) -> dict[str, dict[str, tuple[float, float]]]:
    """Requests alternate between the datasets, so both see the same load on the machine.

    Per dataset and kind: (p50, p95) of the wall-clock latency, and under "<kind>_cpu" of the
    server's CPU time for the same requests.
    """
    times: dict[str, dict[str, list[float]]] = {label: {} for label in datasets}

    def record(label: str, kind: str, elapsed: float) -> None:
        times[label].setdefault(kind, []).append(elapsed)
        times[label].setdefault(f"{kind}_cpu", []).append(reviewer.cpu_ms[-1] / 1000)

    after = dict.fromkeys(datasets, 0)
    for i in range(WARMUP + requests_each):
        for label, dataset in datasets.items():
            elapsed, after[label] = reviewer.next_card(project, dataset, after[label])
            if i >= WARMUP:
                record(label, "next", elapsed)
    # Decide examples from the start of each queue; each answer carries the next card's id.
    current = {label: reviewer.next_card(project, d, 0)[1] for label, d in datasets.items()}
    for i in range(WARMUP + requests_each):
        for label in datasets:
            elapsed, current[label] = reviewer.decide(project, current[label])
            if i >= WARMUP:
                record(label, "decide", elapsed)
    # Not a target: above COUNT_INLINE_LIMIT the counts line arrives in its own request after
    # the card, so it is timed here to show what it costs.
    for _ in range(COUNTS_REQUESTS):
        for label, dataset in datasets.items():
            record(label, "counts", reviewer.counts(project, dataset))
    return {
        label: {kind: summary(values) for kind, values in kinds.items()}
        for label, kinds in times.items()
    }


def wait_for_server(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        try:
            requests.get(f"{base}/login/", timeout=5)
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000)
    args = parser.parse_args()

    started = time.perf_counter()
    server_url, name = scratch_database_create("ftportal_bench_review")
    database_url = f"{server_url}/{name}"
    server: subprocess.Popen[bytes] | None = None
    try:
        env = env_for(database_url)
        python = sys.executable
        subprocess.run(
            [python, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=REPO, env=env, check=True
        )
        seeded = subprocess.run(
            [python, "-c", SEED, PASSWORD], cwd=REPO, env=env, check=True, capture_output=True
        )
        project, big, small = (int(x) for x in seeded.stdout.split())
        load_start = time.perf_counter()
        bulk_load(database_url, big, args.big)
        bulk_load(database_url, small, args.small)
        print(
            f"setup: {args.big} + {args.small} examples loaded in "
            f"{time.perf_counter() - load_start:.1f} s (total setup "
            f"{time.perf_counter() - started:.1f} s)"
        )

        port = free_port()
        command = [
            python, "-m", "gunicorn", "bench.review_load_wsgi:application",
            "--bind", f"127.0.0.1:{port}", "--workers", "2", "--log-level", "warning",
        ]  # fmt: skip
        server = subprocess.Popen(command, cwd=REPO, env=env)
        base = f"http://127.0.0.1:{port}"
        wait_for_server(base, server)
        reviewer = Reviewer(base)
        reviewer.login()

        floor_times = [reviewer.floor() for _ in range(WARMUP + args.requests)][WARMUP:]
        results = measure(reviewer, project, {"big": big, "small": small}, args.requests)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        scratch_database_drop(server_url, name)

    header = f"{'request':<10}{'dataset':>10}{'p50 ms':>10}{'p95 ms':>10}"
    print(f"{header}{'cpu p50':>10}{'cpu p95':>10}")
    for kind in ("next", "decide", "counts"):
        for label, count in (("big", args.big), ("small", args.small)):
            p50, p95 = results[label][kind]
            cpu50, cpu95 = results[label][f"{kind}_cpu"]
            print(f"{kind:<10}{count:>10}{p50:>10.1f}{p95:>10.1f}{cpu50:>10.1f}{cpu95:>10.1f}")
    floor_p50, floor_p95 = summary(floor_times)
    print(f"{'floor':<10}{'(login)':>10}{floor_p50:>10.1f}{floor_p95:>10.1f}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    big_r, small_r = results["big"], results["small"]
    next_ratio = big_r["next"][1] / small_r["next"][1]
    decide_ratio = big_r["decide"][1] / small_r["decide"][1]
    target_met = big_r["next"][1] <= 50 and big_r["decide"][1] <= 50
    print(
        f"examples={args.big} baseline_examples={args.small} requests={args.requests} "
        f"next_p50_ms={big_r['next'][0]:.1f} next_p95_ms={big_r['next'][1]:.1f} "
        f"baseline_next_p95_ms={small_r['next'][1]:.1f} next_p95_ratio={next_ratio:.2f} "
        f"decide_p50_ms={big_r['decide'][0]:.1f} decide_p95_ms={big_r['decide'][1]:.1f} "
        f"baseline_decide_p95_ms={small_r['decide'][1]:.1f} decide_p95_ratio={decide_ratio:.2f} "
        f"next_cpu_p95_ms={big_r['next_cpu'][1]:.1f} "
        f"decide_cpu_p95_ms={big_r['decide_cpu'][1]:.1f} "
        f"counts_p95_ms={big_r['counts'][1]:.1f} floor_p50_ms={floor_p50:.1f} "
        f"target_p95_ms=50 target_met={str(target_met).lower()}"
    )


if __name__ == "__main__":
    main()
