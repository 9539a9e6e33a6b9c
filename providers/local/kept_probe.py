"""The training probe's result, kept on disk for this host.

The probe (precision.py) loads the base model once for each candidate setup and times each:
about ten seconds on 2 CPU cores (9.4 to 10.0 s measured), before a worker's first local job,
every time a worker process starts. Its answer depends only on the host, the software and the
model, so it is kept in a file and a worker that starts again reads it instead of measuring.

A kept result is filed under everything it depends on (``probe_key``): this file's version of
the probe, the base model's files, the device and its CPU or GPU model with the instruction sets
that decide its matrix kernels, torch's thread count, how torch's OpenMP threads wait, the
versions of torch, transformers and peft, and the job's adapter shape and forced precision.
When any of them changes, the probe measures again. Deleting the directory does the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import peft
import torch
import transformers

logger = logging.getLogger(__name__)

# Raised whenever the probe measures something else or decides differently, so that results
# kept by an earlier version are measured again.
# 2: the layout check (loss.prefix_sharing_is_exact) now packs rests behind a mask.
KEPT_PROBE_VERSION = 2
CPU_INFO = Path("/proc/cpuinfo")
# The CPU flags that decide which matrix kernels oneDNN and torch run.
MATRIX_FLAGS = frozenset(
    {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"}
)


def cpu_model() -> str:
    """The CPU's model name and its matrix instruction sets, as /proc/cpuinfo lists them."""
    try:
        lines = CPU_INFO.read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    flags = sorted(MATRIX_FLAGS.intersection(fields.get("flags", "").split()))
    return f"{fields.get('model name', platform.machine())} [{' '.join(flags)}]"


def device_model(device: str) -> str:
    if device.startswith("cuda"):
        return str(torch.cuda.get_device_name(device))
    return cpu_model()


def model_files_digest(base_model_dir: Path) -> str:
    """A digest of the model's configuration and its files' names and sizes: cheap to compute,
    and different for another model or another conversion of the same one."""
    digest = hashlib.sha256()
    for path in sorted(base_model_dir.rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(base_model_dir)}\0{path.stat().st_size}\0".encode())
    config = base_model_dir / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    return digest.hexdigest()


def probe_key(
    *,
    base_model_dir: Path,
    device: str,
    adapter: str,
    forced_precision: str | None,
    openmp: str,
) -> dict[str, str]:
    """What a probe's result depends on; a kept result is used only under an equal key."""
    return {
        "probe": str(KEPT_PROBE_VERSION),
        "model": str(base_model_dir.resolve()),
        "model_files": model_files_digest(base_model_dir),
        "device": device,
        "hardware": device_model(device),
        "threads": str(torch.get_num_threads()),
        "openmp": openmp,
        "software": f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}",
        "adapter": adapter,
        "forced_precision": forced_precision or "auto",
    }


def kept_path(directory: Path, key: dict[str, str]) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return directory / f"{name}.json"


def read_kept(directory: Path, key: dict[str, str]) -> dict[str, Any] | None:
    """The result kept under this key, or None where there is none or it cannot be read (the
    probe then measures again and overwrites it)."""
    path = kept_path(directory, key)
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("measuring again: cannot read the kept probe result %s: %s", path, error)
        return None
    if not isinstance(stored, dict) or stored.get("key") != key:
        logger.warning("measuring again: %s was kept under another key", path)
        return None
    result = stored.get("result")
    return result if isinstance(result, dict) else None


def keep(directory: Path, key: dict[str, str], result: dict[str, Any]) -> Path:
    """Write the result under its key, whole or not at all (two workers probing at once each
    write a complete file; the later one stays)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = kept_path(directory, key)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump({"key": key, "result": result}, file, indent=2, sort_keys=True)
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path
