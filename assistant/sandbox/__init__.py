"""The worker's sandbox: namespaces, rlimits, uid drop, Landlock and seccomp, each optional.

The worker calls `apply_sandbox` before importing onnxruntime and `apply_seccomp` before
it parses any model file; `describe_sandbox_support` tells doctor what would work here.
"""

from assistant.sandbox.layers import apply_sandbox, apply_seccomp, reachable, thread_count
from assistant.sandbox.report import (
    LAYERS,
    LayerStatus,
    SandboxPolicy,
    SandboxReport,
    default_read_paths,
)
from assistant.sandbox.support import describe_sandbox_support, worker_environment

__all__ = [
    "LAYERS",
    "LayerStatus",
    "SandboxPolicy",
    "SandboxReport",
    "apply_sandbox",
    "apply_seccomp",
    "default_read_paths",
    "describe_sandbox_support",
    "reachable",
    "thread_count",
    "worker_environment",
]
