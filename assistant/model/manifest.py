"""manifest.json: what a prepared model folder holds, where it came from and how good it is."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from assistant.model.errors import ModelError

MANIFEST_NAME = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
# 2: the graph takes `logits_to_keep`. A folder of another format is rebuilt by `prepare`.
FORMAT_VERSION = 2
# How a folder's weights were built (manifest `precision`): fp32, int8 (8-bit blocks from the
# float weights), gguf (the source file's own quantized blocks, mapped exactly).
Precision = Literal["int8", "fp32", "gguf"]


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """Checksum and size of one file in the model folder."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """The contents of manifest.json; `config` has the shapes the engine needs for its caches."""

    id: str
    architecture: str
    parameters: int
    precision: str
    context_length: int
    config: dict[str, Any]
    bos_token_id: int | None
    eos_token_id: int | None
    end_of_turn_token_id: int | None
    stop_token_ids: list[int]
    chat_template: str | None
    source: dict[str, str]
    files: dict[str, FileEntry]
    graph: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    quality: dict[str, float] | None = None
    created: str = ""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """Pretty JSON text."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse manifest.json; a missing or mistyped field is a ModelError."""
        try:
            raw = json.loads(text)
            raw["files"] = {name: FileEntry(**entry) for name, entry in raw["files"].items()}
            manifest = cls(**raw)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ModelError(f"invalid {MANIFEST_NAME}: {err}") from err
        if manifest.format_version != FORMAT_VERSION:
            raise ModelError(f"{MANIFEST_NAME} format {manifest.format_version} is not supported")
        return manifest

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """Load `folder`/manifest.json."""
        path = folder / MANIFEST_NAME
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ModelError(f"cannot read {path}: {err}") from err

    def size_bytes(self) -> int:
        """Total size of the listed files."""
        return sum(entry.size for entry in self.files.values())

    def files_match(self, folder: Path) -> bool:
        """Whether every listed file is present with the recorded size and checksum."""
        for name, entry in self.files.items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != entry.size:
                return False
            if sha256_file(path) != entry.sha256:
                return False
        return True


def describe_files(folder: Path, names: list[str]) -> dict[str, FileEntry]:
    """FileEntry for each named file in `folder`."""
    return {
        name: FileEntry(sha256=sha256_file(folder / name), size=(folder / name).stat().st_size)
        for name in names
    }
