"""The worker's start-up: confine the process before any byte of the model is parsed.

The model folder is user-supplied (a GGUF converted by `model prepare`, or copied in), so
its files are untrusted input to native parsers (protobuf in onnxruntime, JSON in
tokenizers, Jinja templates). Code is trusted. The order, on every layout:

1. Trusted code is imported: Python, numpy, onnxruntime, tokenizers, jinja2, the engine.
   Where the unprivileged uid can read it, after the uid drop; where it cannot (e.g. a
   Python under /root, mode 0700), as the starting uid but already under NO_NEW_PRIVS
   and Landlock.
2. The model folder is opened as one directory descriptor, still as the starting uid.
   Nothing is read from it.
3. The uid drop, NO_NEW_PRIVS, Landlock and seccomp are all in place.
4. Only now the model is read and parsed, through `/proc/self/fd/N/<file>`: the held
   descriptor stands in for the path, so directories above it the unprivileged uid cannot
   traverse do not matter (the folder and its files must still be readable by it).

The hello message reports the order and the process's own uid, NO_NEW_PRIVS and seccomp
mode as read from /proc just before the first model file was opened.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

from assistant import heap
from assistant.worker.protocol import StartSpec

# What the worker imports before it may lose the right to read Python's own files: the
# engine's stack, plus what the first generation imports lazily (numpy.random for
# sampling; jinja2.ext, pprint and the unicode-escape codec when a chat template compiles).
TRUSTED_MODULES = (
    "numpy",
    "numpy.random",
    "onnxruntime",
    "tokenizers",
    "jinja2",
    "jinja2.ext",
    "pprint",
    "encodings.unicode_escape",
    "llguidance",  # grammar-constrained decoding (engine/constrain.py)
    "assistant.core.grammar",
    "assistant.engine.batch",
    "assistant.engine.engine",
    "assistant.model.manager",
)


def import_trusted() -> None:
    for name in TRUSTED_MODULES:
        importlib.import_module(name)


def code_paths() -> tuple[Path, ...]:
    """Where the trusted code lives: the stdlib, the venv and its packages."""
    keys = ("stdlib", "platstdlib", "purelib", "platlib")
    paths = {Path(p) for k, p in sysconfig.get_paths().items() if k in keys}
    return (Path(sys.base_prefix) / "lib", Path(sys.prefix), *sorted(paths))


def confine_then_load(spec: StartSpec) -> tuple[Any, dict[str, Any]]:
    """The engine and the sandbox section of the hello message."""
    if not spec.sandbox:
        import_trusted()
        return _load(spec, Path(spec.model_path), False), {"enabled": False}
    from assistant.sandbox import (  # noqa: PLC0415 - the unsandboxed path never needs it
        SandboxPolicy,
        apply_sandbox,
        apply_seccomp,
        default_read_paths,
        reachable,
    )

    policy = SandboxPolicy(
        read_paths=default_read_paths(spec.model_path),
        scratch_dir=Path(spec.scratch_dir) if spec.scratch_dir else None,
        memory_bytes=spec.memory_bytes,
        max_tasks=max(256, spec.threads * 8),
    )
    dropping = os.geteuid() == 0
    code_readable = all(reachable(p, policy.uid, policy.gid) for p in code_paths())
    # ORT needs the folder's real path to be searchable to map external data in place.
    in_memory = dropping and not reachable(Path(spec.model_path), policy.uid, policy.gid)
    folder = os.open(spec.model_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if dropping and not code_readable:
            report = apply_sandbox(policy, before_uid_drop=import_trusted)
            order = "trusted code imported under NO_NEW_PRIVS and Landlock before the uid drop"
        else:
            report = apply_sandbox(policy)
            import_trusted()
            order = "trusted code imported after the whole sandbox but seccomp"
        report = apply_seccomp(report)
        at_parse = confinement_now()
        engine = _load(spec, Path(f"/proc/self/fd/{folder}"), in_memory)
    finally:
        os.close(folder)
    sandbox = {
        "enabled": True,
        "order": f"{order}; model folder opened as a descriptor; parsed after seccomp",
        "at_model_parse": at_parse,
        "external_data": "copied from memory" if in_memory else "mapped from the file",
        **report.to_payload(),
    }
    return engine, sandbox


def confinement_now() -> dict[str, int]:
    """This process's real uid, NoNewPrivs and Seccomp mode, from /proc/self/status."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {
        "uid": int(fields["Uid"].split()[0]),
        "no_new_privs": int(fields["NoNewPrivs"]),
        "seccomp": int(fields["Seccomp"]),
    }


def _load(spec: StartSpec, folder: Path, in_memory: bool) -> Any:
    """Load the model from `folder` and run one short warm-up generation through every
    code path a request takes, so that the first real request pays no first-call costs."""
    from assistant.core.grammar import short_text_grammar  # noqa: PLC0415
    from assistant.engine.batch import Batch  # noqa: PLC0415
    from assistant.engine.engine import Engine  # noqa: PLC0415
    from assistant.engine.request import GenerationRequest, SamplingParams  # noqa: PLC0415
    from assistant.model.errors import ModelError  # noqa: PLC0415
    from assistant.model.manager import ModelInstance  # noqa: PLC0415

    try:
        model = ModelInstance.load(folder, spec.threads, external_in_memory=in_memory)
    except ModelError as err:  # name the folder, not the descriptor it was read through
        raise ModelError(str(err).replace(str(folder), spec.model_path)) from err
    engine = Engine.from_model(model, spec.context_tokens)
    sampling = SamplingParams(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.1)
    warmup = Batch(engine, 1)
    warmup.add(GenerationRequest("warmup", (("user", "Hi"),), 2, sampling, ("\n\n",)))
    # The grammar path too: llguidance's token index is built now, not on HA's first turn.
    grammar = short_text_grammar()
    warmup.add(GenerationRequest("warmup-grammar", (("user", "Hi"),), 2, grammar=grammar))
    while warmup.busy:
        warmup.step()
    # Loading leaves ORT's discarded copies in the heap (service_footprint.py, int8 model:
    # worker RSS online 345 MB instead of 388 with the data copied from memory, 340 instead
    # of 355 with it mapped; later requests reuse part of it, -11 / -2 MB after two).
    heap.trim()
    return engine
