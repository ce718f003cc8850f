"""ModelManager: find and load prepared model folders (preparing them: assistant.convert)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from assistant.model.chat import ChatTemplate
from assistant.model.errors import ModelError, ModelNotFoundError
from assistant.model.manifest import (
    MANIFEST_NAME,
    MODEL_FILE,
    TOKENIZER_FILE,
    Manifest,
    Precision,
)
from assistant.model.paths import default_models_dir, resolve_model_dir
from assistant.model.session import open_session


@dataclass(frozen=True)
class CatalogEntry:
    """One prepared model folder, as `model list` shows it."""

    id: str
    path: Path
    size_bytes: int
    precision: str
    parameters: int
    context_length: int


@dataclass
class ModelInstance:
    """A loaded model: its manifest, an ONNX Runtime session and its tokenizer."""

    path: Path
    manifest: Manifest
    session: Any  # onnxruntime.InferenceSession (untyped package)
    tokenizer: Tokenizer
    chat: ChatTemplate | None

    @classmethod
    def load(
        cls, path: Path, threads: int | None = None, *, external_in_memory: bool = False
    ) -> ModelInstance:
        """Read the folder and build the session; the only place a serving session is made.
        `external_in_memory`: see `open_session` (the worker's sandbox may need it)."""
        if not (path / MANIFEST_NAME).is_file():
            raise ModelNotFoundError(f"no prepared model at {path} (run `model prepare`)")
        manifest = Manifest.read(path)
        # The manifest is as untrusted as the model: only plain names inside the folder.
        known = {MANIFEST_NAME, MODEL_FILE, TOKENIZER_FILE}
        external = [
            n for n in manifest.files if n not in known and Path(n).name == n and n[0] != "."
        ]
        try:
            tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
            session = open_session(
                path / MODEL_FILE, threads, external if external_in_memory else ()
            )
        except Exception as err:  # ORT and tokenizers raise their own exception types
            raise ModelError(f"cannot load the model at {path}: {err}") from err
        chat = None
        if manifest.chat_template:
            bos = _token(tokenizer, manifest.bos_token_id)
            eos = _token(tokenizer, manifest.eos_token_id)
            chat = ChatTemplate(manifest.chat_template, bos_token=bos, eos_token=eos)
        return cls(path=path, manifest=manifest, session=session, tokenizer=tokenizer, chat=chat)

    def render_chat(
        self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt text for a conversation, per the model's own chat template."""
        if self.chat is None:
            raise ModelError(f"model {self.manifest.id} has no chat template")
        return self.chat.render_chat(messages, add_generation_prompt)


def _token(tokenizer: Tokenizer, token_id: int | None) -> str:
    if token_id is None:
        return ""
    return tokenizer.id_to_token(token_id) or ""


class ModelManager:
    """Entry point for the rest of the service: what models exist, and loading one."""

    def __init__(self, models_dir: Path | None = None) -> None:
        self.models_dir = models_dir or default_models_dir()

    def resolve(self, path: Path | str) -> Path:
        """A model folder from a path, or from a model id inside models_dir."""
        return resolve_model_dir(self.models_dir, path)

    def load_model(
        self, path: Path | str, device: str = "cpu", threads: int | None = None
    ) -> ModelInstance:
        """Load a prepared model folder (or model id) for inference."""
        if device != "cpu":
            raise ModelError(f"device {device!r} is not supported (cpu only)")
        return ModelInstance.load(self.resolve(path), threads=threads)

    def optimize_model(self, model: ModelInstance, precision: Precision = "int8") -> ModelInstance:
        """The same model at `precision`, prepared from its recorded GGUF source if needed
        (needs the `prepare` extra unless the model already has that precision)."""
        if model.manifest.precision == precision:
            return model
        from assistant.convert import prepare_model  # noqa: PLC0415 - the optional extra

        source = model.manifest.source
        gguf = Path(source["gguf_path"]) if "wheel" not in source else None
        if gguf is not None and not gguf.is_file():
            raise ModelError(f"the source GGUF of {model.manifest.id} is gone: {gguf}")
        folder = prepare_model(model.path.parent, gguf, precision)
        threads = model.session.get_session_options().intra_op_num_threads or None
        return ModelInstance.load(folder, threads=threads)

    def catalog(self, models_dir: Path | None = None) -> list[CatalogEntry]:
        """Every prepared model in models_dir (work-in-progress dot-folders are skipped)."""
        root = models_dir or self.models_dir
        entries: list[CatalogEntry] = []
        if not root.is_dir():
            return entries
        for folder in sorted(root.iterdir()):
            if folder.name.startswith(".") or not (folder / MANIFEST_NAME).is_file():
                continue
            try:
                manifest = Manifest.read(folder)
            except ModelError:
                continue  # a foreign or damaged folder is not a model; `doctor` reports it
            entries.append(
                CatalogEntry(
                    id=manifest.id,
                    path=folder,
                    size_bytes=manifest.size_bytes(),
                    precision=manifest.precision,
                    parameters=manifest.parameters,
                    context_length=manifest.context_length,
                )
            )
        return entries
