"""The gateway's own cost: the same chat requests sent to a fake OpenAI-compatible backend that
answers after 50 ms, once through the gateway (``POST /v1/chat/completions`` with an
application key, ``model="bench/production"``) and once to the fake directly (the baseline),
with 50 concurrent clients for a fixed number of requests on each side.

    python bench/gateway.py [--requests 2000] [--concurrency 50] [--delay-ms 50]
                            [--repeats 3] [--workers 2] [--threads 64] [--pin]

With ``--pin`` the gateway runs on the machine's first core and the fake and the clients on
the others, so neither side competes with the other for a core (on 2 cores: one each).

What runs, each in a process of its own:

- the fake: ``python -m fakes.chat_servers 0.05`` (``fakes.chat_servers``, the OpenAI fake the
  tests use; a thread per connection, connections kept alive as real providers keep them);
- the gateway: ``uvicorn config.asgi:application --workers 2 --loop uvloop --http httptools
  --lifespan on --no-access-log`` (2 workers, as docker-compose runs it; the loop and parser
  are what uvicorn's "auto" picks with the requirements installed, the pure-Python asyncio
  loop and h11 parser when they are not),
  DJANGO_DEBUG off as in production (no query recording), FTPORTAL_GATEWAY_THREADS threads,
  the request log's default queue and batches. Its database
  is a scratch one beside DATABASE_URL's (migrated, dropped afterwards); its cache (the rate
  limit) is Redis (REDIS_URL, default redis://127.0.0.1:6379/0) under a key prefix of its own.
  The served version is a hosted fine-tuned one (an ``ft:`` id at a registered
  OpenAI-compatible endpoint: the fake), promoted to ``production``, so every request runs the
  whole path: the key (admitted from Postgres once, then as kept: one Redis round trip that
  also counts it), alias resolution (kept a second), the backend asked through aiohttp
  (``OpenAICompatibleChat.answer_async``), the request log.
- the clients: this process, 50 coroutines on one asyncio loop, each on one kept-alive
  connection sending its next request when the last is answered (raw HTTP/1.1 over asyncio
  streams, not an HTTP library: this machine has 2 cores for the gateway, the fake and the
  clients together, so the clients are kept as cheap as they can be).

Each repeat times both sides back to back (alternating which goes first) after a warm-up of
each; latency is per request, from sending it to its last byte. Per repeat: overhead at a
percentile = the gateway's latency at it minus the direct latency at it; throughput ratio =
gateway requests/s over direct requests/s. The medians over the repeats are printed.

Every gateway request must be logged exactly once: after the timed repeats the gateway is
stopped cleanly (SIGTERM: its request log writes what is queued at exit), and the request log's
rows are read back by the ``x-request-id`` each answer carried. The bench fails unless every
answered request has exactly one row. The last line is key=value.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# What uvicorn's "auto" picks, named so the figures say which ran.
LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
HTTP_PARSER = "httptools" if importlib.util.find_spec("httptools") else "h11"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, Python puts bench/ on sys.path, not the root

from bench.databases import scratch_database_create, scratch_database_drop  # noqa: E402
from fakes.chat_servers import DEFAULT_API_KEY as FAKE_API_KEY  # noqa: E402

PROJECT = "bench"
MODEL_NAME = "bench/production"
BASE = "gpt-4o-mini-2024-07-18"
KEY_ENV = "FTPORTAL_BENCH_FAKE_CHAT_KEY"
WARMUP_USER = "warmup"
RUN_USER = "bench"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60


# --- the clients ---------------------------------------------------------------------------------


class HTTPConnection:
    """One kept-alive HTTP/1.1 connection: a request out, its whole answer in."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.reader, self.writer

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await self._open()
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            pieces = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                pieces.append((await reader.readexactly(size + 2))[:-2])
            body = b"".join(pieces)
        else:
            raise RuntimeError(f"an answer with neither Content-Length nor chunks: {headers}")
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Side:
    """Where one side's requests go and how each reads."""

    name: str
    host: str
    port: int
    path: str
    authorization: str
    model: str


@dataclass
class SideRun:
    latencies_ms: list[float]
    seconds: float
    request_ids: list[str] = field(default_factory=list)
    gateway_cpu_seconds: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def request_bytes(side: Side, number: int, user: str) -> bytes:
    body = json.dumps(
        {
            "model": side.model,
            "messages": [
                {"role": "system", "content": "Triage the ticket."},
                {"role": "user", "content": f"ticket {user} {number}: my invoice is wrong"},
            ],
            "max_tokens": 32,
            "temperature": 0,
            "user": user,
        }
    ).encode()
    head = (
        f"POST {side.path} HTTP/1.1\r\nHost: {side.host}:{side.port}\r\n"
        f"Authorization: {side.authorization}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def run_side(side: Side, *, requests: int, concurrency: int, user: str) -> SideRun:
    """``requests`` requests, ``concurrency`` at a time, each client on its own connection."""
    numbers = itertools.count()
    latencies: list[float] = []
    request_ids: list[str] = []

    async def client() -> None:
        connection = HTTPConnection(side.host, side.port)
        try:
            while (number := next(numbers)) < requests:
                raw = request_bytes(side, number, user)
                sent = time.perf_counter()
                status, headers, body = await connection.request(raw)
                latencies.append((time.perf_counter() - sent) * 1000)
                if status != 200:
                    raise RuntimeError(f"{side.name}: {status} {body[:300]!r}")
                if "x-request-id" in headers:
                    request_ids.append(headers["x-request-id"])
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return SideRun(latencies, time.perf_counter() - started, request_ids)


# --- the processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned_to(cores: set[int] | None) -> Callable[[], None] | None:
    """For Popen's preexec_fn: the child runs on ``cores`` only (None: anywhere)."""
    if cores is None:
        return None
    return lambda: os.sched_setaffinity(0, cores)


def start_fake(delay_ms: float, cores: set[int] | None) -> tuple[subprocess.Popen[str], str]:
    fake = subprocess.Popen(
        [sys.executable, "-m", "fakes.chat_servers", str(delay_ms / 1000)],
        preexec_fn=pinned_to(cores),
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    return fake, fake.stdout.readline().strip()  # its base URL, .../v1


def gateway_command(port: int, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "config.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(args.workers),
        "--loop",
        LOOP,
        "--http",
        HTTP_PARSER,
        "--lifespan",
        "on",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def wait_until_answering(gateway: subprocess.Popen[bytes], side: Side) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if gateway.poll() is not None:
            raise SystemExit(f"the gateway exited with {gateway.returncode} at start")
        try:
            status, _, body = asyncio.run(
                HTTPConnection(side.host, side.port).request(
                    f"GET /v1/models HTTP/1.1\r\nHost: {side.host}\r\nConnection: close\r\n"
                    f"Authorization: {side.authorization}\r\n\r\n".encode()
                )
            )
            if status == 200:
                return
            raise SystemExit(f"the gateway answered /v1/models with {status}: {body[:300]!r}")
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("the gateway did not start") from None
            time.sleep(0.2)


# --- the data ------------------------------------------------------------------------------------


def served_version_create(fake_base_url: str) -> tuple[str, str]:
    """A project whose ``production`` alias serves a hosted fine-tuned version at the fake, and
    an application key of it with room for every request: (the key in plaintext, the
    version's ``ft:`` id, which the direct side asks the fake for)."""
    from decimal import Decimal

    from django.contrib.auth.models import User

    from catalog.models import BaseModel, Provider
    from ftportal.models import Membership, Project
    from ftportal.roles import Role
    from registry.models import ModelVersion
    from registry.services import model_version_promote, model_version_register
    from serving.models import MAX_RATE_LIMIT_PER_MINUTE
    from serving.services import application_key_create
    from tests.factories import fake_endpoint, finished_evaluation, frozen_version
    from training.models import JobStatus, TrainingJob

    lead = User.objects.create_user("bench-lead")
    project = Project.objects.create(name=PROJECT)
    Membership.objects.create(project=project, user=lead, role=Role.ML_LEAD)
    base, _ = BaseModel.objects.update_or_create(
        key=BASE,
        defaults={
            "display_name": "GPT-4o mini",
            "provider": Provider.OPENAI,
            "tokenizer": "o200k_base",
            "training_usd_per_million_tokens": Decimal("3.00"),
            "endpoint": fake_endpoint(fake_base_url, secret_env=KEY_ENV),
            "is_active": True,
        },
    )
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=base,
        provider=Provider.OPENAI,
        hyperparameters={"epochs": 1},
        model_name="triage",
        created_by=lead,
        status=JobStatus.SUCCEEDED,
    )
    version: ModelVersion = model_version_register(
        job=job, checkpoint=None, fine_tuned_model=f"ft:{BASE}:bench:job{job.pk}"
    )
    finished_evaluation(
        version=version, against=None, scores=[1.0] * 10, baseline_scores=[0.0] * 10, user=lead
    )
    model_version_promote(
        model_version=version, expected_current_version=None, user=lead, reason="bench"
    )
    created = application_key_create(
        project=project,
        user=lead,
        name="bench",
        rate_limit_per_minute=MAX_RATE_LIMIT_PER_MINUTE,
    )
    return created.plaintext, version.fine_tuned_model


def logged_rows(request_ids: list[str]) -> tuple[int, int]:
    """(rows of the run's requests, distinct request ids among them)."""
    from django.db.models import Count

    from serving.models import RequestLog

    rows = RequestLog.objects.filter(caller_user=RUN_USER)
    counted = rows.aggregate(rows=Count("id"), ids=Count("request_id", distinct=True))
    known = rows.filter(request_id__in=request_ids).count()
    if known != counted["rows"]:
        raise SystemExit(f"{counted['rows'] - known} logged rows of no answered request")
    return counted["rows"], counted["ids"]


# --- the run -------------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of a process and its workers so far."""
    import psutil

    process = psutil.Process(pid)
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        times = member.cpu_times()
        total += times.user + times.system
    return total


def describe(name: str, run: SideRun) -> str:
    return (
        f"{name}: {len(run.latencies_ms)} requests in {run.seconds:.2f} s, {run.rps:.0f} rps, "
        f"p50 {run.percentile(0.5):.1f} ms, p99 {run.percentile(0.99):.1f} ms, gateway CPU "
        f"{run.gateway_cpu_seconds * 1000 / len(run.latencies_ms):.2f} ms a request"
    )


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    # --pin: the gateway on the first core, the fake and the clients on the others, so that
    # neither side's figures include the other competing for a core (Postgres and Redis run
    # wherever the system puts them). The direct side then runs on fewer cores than the
    # machine has; its figures say whether that capped it.
    all_cores = sorted(os.sched_getaffinity(0))
    gateway_cores = {all_cores[0]} if args.pin else None
    other_cores = set(all_cores[1:]) if args.pin else None
    if other_cores is not None:
        os.sched_setaffinity(0, other_cores)  # this process: the clients
    fake, fake_base_url = start_fake(args.delay_ms, other_cores)
    gateway: subprocess.Popen[bytes] | None = None
    try:
        app_key, fine_tuned_model = served_version_create(fake_base_url)
        fake_port = int(fake_base_url.rsplit(":", 1)[1].split("/")[0])
        direct = Side(
            "direct",
            "127.0.0.1",
            fake_port,
            "/v1/chat/completions",
            f"Bearer {FAKE_API_KEY}",
            fine_tuned_model,
        )
        gateway_port = free_port()
        through = Side(
            "gateway",
            "127.0.0.1",
            gateway_port,
            "/v1/chat/completions",
            f"Bearer {app_key}",
            MODEL_NAME,
        )
        gateway = subprocess.Popen(
            gateway_command(gateway_port, args), cwd=REPO, preexec_fn=pinned_to(gateway_cores)
        )
        wait_until_answering(gateway, through)
        print(
            f"gateway: uvicorn, {args.workers} worker(s), {LOOP} loop, {HTTP_PARSER} parser, "
            f"cores {sorted(gateway_cores) if gateway_cores else 'any'} (fake and clients: "
            f"{sorted(other_cores) if other_cores else 'any'}), "
            f"{os.environ['FTPORTAL_GATEWAY_THREADS']} threads; backend delay {args.delay_ms} ms; "
            f"{args.concurrency} clients; {args.requests} requests a side a repeat",
            flush=True,
        )
        for side in (direct, through):
            asyncio.run(
                run_side(side, requests=args.warmup, concurrency=args.concurrency, user=WARMUP_USER)
            )
        overhead_p50: list[float] = []
        overhead_p99: list[float] = []
        ratios: list[float] = []
        request_ids: list[str] = []
        for repeat in range(args.repeats):
            runs: dict[str, SideRun] = {}
            order = [direct, through] if repeat % 2 == 0 else [through, direct]
            for side in order:
                cpu_before = process_cpu_seconds(gateway.pid)
                runs[side.name] = asyncio.run(
                    run_side(
                        side,
                        requests=args.requests,
                        concurrency=args.concurrency,
                        user=RUN_USER,
                    )
                )
                runs[side.name].gateway_cpu_seconds = process_cpu_seconds(gateway.pid) - cpu_before
            plain, served = runs["direct"], runs["gateway"]
            request_ids += served.request_ids
            overhead_p50.append(served.percentile(0.5) - plain.percentile(0.5))
            overhead_p99.append(served.percentile(0.99) - plain.percentile(0.99))
            ratios.append(served.rps / plain.rps)
            print(f"repeat {repeat + 1}: {describe('direct', plain)}", flush=True)
            print(f"repeat {repeat + 1}: {describe('gateway', served)}", flush=True)
            print(
                f"repeat {repeat + 1}: overhead p50 {overhead_p50[-1]:.1f} ms, "
                f"p99 {overhead_p99[-1]:.1f} ms, throughput {ratios[-1]:.2f}x direct",
                flush=True,
            )
        # A clean stop: the gateway's request log writes whatever is still queued at exit.
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(STOP_TIMEOUT_S)
        requests = len(request_ids)
        if requests != args.repeats * args.requests or len(set(request_ids)) != requests:
            raise SystemExit(f"{requests} answers with a request id, some of them repeated")
        logged, distinct = logged_rows(request_ids)
        print(f"request log: {logged} rows for {requests} answered requests ({distinct} ids)")
        if logged != requests or distinct != requests:
            raise SystemExit("FAIL: not every request logged exactly once")
        print(
            f"requests={requests} logged={logged} workers={args.workers} pinned={args.pin} "
            f"concurrency={args.concurrency} delay_ms={args.delay_ms} repeats={args.repeats} "
            f"overhead_p50_ms={statistics.median(overhead_p50):.1f} "
            f"overhead_p99_ms={statistics.median(overhead_p99):.1f} "
            f"throughput_ratio={statistics.median(ratios):.2f}"
        )
    finally:
        if gateway is not None and gateway.poll() is None:
            import psutil

            # Its workers too (with --workers, uvicorn's supervisor has children of its own).
            for worker in psutil.Process(gateway.pid).children(recursive=True):
                worker.kill()
            gateway.kill()
            gateway.wait()
        assert fake.stdin is not None
        fake.stdin.close()
        fake.wait(STOP_TIMEOUT_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="a side, a repeat")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=200, help="a side, not timed")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--threads", type=int, default=64, help="FTPORTAL_GATEWAY_THREADS")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the gateway on the first core, the fake and the clients on the others",
    )
    args = parser.parse_args()
    if args.requests < args.concurrency or args.repeats < 1:
        parser.error("--requests at least --concurrency; --repeats at least 1")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    server, name = scratch_database_create("ftportal_bench_gateway")
    os.environ.update(
        {
            "DATABASE_URL": f"{server}/{name}",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            # As in production: no query recording, no debug pages.
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "bench-gateway-not-secret"),
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            # The cache's key prefix: this run's rate-limit counters are its own.
            "FTPORTAL_TEST_RUN_ID": f"bench-gateway-{os.getpid()}",
            "FTPORTAL_GATEWAY_THREADS": str(args.threads),
            KEY_ENV: FAKE_API_KEY,
            # The fake's key is read from KEY_ENV, which an endpoint may name only when listed.
            "FTPORTAL_SECRET_ENVS": f"{KEY_ENV},"
            + os.environ.get("FTPORTAL_SECRET_ENVS", "OPENAI_API_KEY,ANTHROPIC_API_KEY"),
        }
    )
    try:
        run(args)
    finally:
        from django.db import connections

        connections.close_all()
        scratch_database_drop(server, name)


if __name__ == "__main__":
    main()
