"""Streaming import parse vs the whole-file approach, on a generated chat JSONL, in the same run.

    python bench/import_stream.py [--examples 100000] [--repeats 3] [--gzip]

The streaming parser (datasets.formats.StreamParser) reads one bounded line at a time and fully
validates each example. The baseline is what the importer did before: read all bytes, split on
newlines, json.loads every line and keep the results (no validation at all, so it is the
cheaper of the two per line). Time is measured without tracemalloc; peak Python memory in a
separate pass with tracemalloc. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(REPO))

from datasets.formats import ImportOptions, StreamParser  # noqa: E402
from datasets.jsonl import ParsedExample  # noqa: E402

SYSTEM = "Classify the support ticket. Answer with JSON: category and priority."
CATEGORIES = ["billing", "account", "bug", "feature_request"]


def write_jsonl(path: Path, examples: int, *, compress: bool) -> None:
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as out:
        for n in range(examples):
            category = CATEGORIES[n % len(CATEGORIES)]
            record = {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"Ticket {n}: my {category} problem #{n % 97}."},
                    {"role": "assistant", "content": json.dumps({"category": category})},
                ],
                "metadata": {"n": n},
            }
            out.write(json.dumps(record) + "\n")


def streaming(path: Path) -> int:
    count = 0
    with path.open("rb") as raw:
        parser = StreamParser(raw, filename=path.name, options=ImportOptions())
        for event in parser.events():
            if isinstance(event, ParsedExample):
                count += 1
    return count


def whole_file(path: Path) -> int:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    records = [json.loads(line) for line in data.split(b"\n") if line.strip()]
    return len(records)


def timed(run: Callable[[Path], int], path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    count = run(path)
    return time.perf_counter() - started, count


def peak_bytes(run: Callable[[Path], int], path: Path) -> int:
    tracemalloc.start()
    try:
        run(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gzip", action="store_true", help="read a gzip-compressed file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / ("bench.jsonl.gz" if args.gzip else "bench.jsonl")
        write_jsonl(path, args.examples, compress=args.gzip)
        size = os.path.getsize(path)
        print(f"file: {args.examples} examples, {size / 1e6:.1f} MB on disk ({path.name})")

        times: dict[str, list[float]] = {"stream": [], "baseline": []}
        for repeat in range(args.repeats):
            # Alternate the order so background load hits both alike.
            order = [("stream", streaming), ("baseline", whole_file)]
            for name, run in order if repeat % 2 == 0 else order[::-1]:
                seconds, count = timed(run, path)
                assert count == args.examples, (name, count)
                times[name].append(seconds)
        peaks = {"stream": peak_bytes(streaming, path), "baseline": peak_bytes(whole_file, path)}

    rates = {name: args.examples / statistics.median(t) for name, t in times.items()}
    for name in ("stream", "baseline"):
        median = statistics.median(times[name])
        print(
            f"{name:9s} {rates[name]:>10,.0f} examples/s  median {median:.2f} s"
            f"  peak Python memory {peaks[name] / 1e6:8.1f} MB"
        )
    speed_ratio = rates["stream"] / rates["baseline"]
    memory_ratio = peaks["baseline"] / max(1, peaks["stream"])
    print(
        f"the streaming parser validates every example at {speed_ratio:.2f}x the baseline's speed"
        f" (which only decodes JSON), in {memory_ratio:.0f}x less memory"
    )
    print(
        f"examples={args.examples} file_mb={size / 1e6:.1f}"
        f" stream_per_s={rates['stream']:.0f} baseline_per_s={rates['baseline']:.0f}"
        f" speed_ratio={speed_ratio:.2f} stream_peak_mb={peaks['stream'] / 1e6:.2f}"
        f" baseline_peak_mb={peaks['baseline'] / 1e6:.1f} memory_ratio={memory_ratio:.0f}"
    )


if __name__ == "__main__":
    main()
