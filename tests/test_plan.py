"""The plan on hand-written descriptions of the machines users really have."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from assistant.config import parse_config
from assistant.hardware import HardwareFacts
from assistant.models_present import spec_from_manifest
from assistant.plan import DEFAULT_MODEL_ID, KNOWN_MODELS, Plan, PlanError, make_plan
from assistant.plan_speed import CACHE_SPEEDUP, LAYER_OVERHEAD_S, decode_tok_s

PI4 = HardwareFacts(
    arch="aarch64",
    cpu_model="Cortex-A72",
    logical_cpus=4,
    usable_cpus=4.0,
    cpu_quota=None,
    memory_total_mb=3_793,
    memory_limit_mb=None,
    memory_available_mb=2_300,
    cpu_features=frozenset({"asimd"}),
    storage="sd_emmc",
    board="Raspberry Pi 4 Model B",
)
PI5 = replace(
    PI4,
    cpu_model="Cortex-A76",
    memory_total_mb=8_059,
    memory_available_mb=6_100,
    cpu_features=frozenset({"asimd", "dotprod"}),
    storage="nvme",
    board="Raspberry Pi 5 Model B",
)
N100 = HardwareFacts(
    arch="x86_64",
    cpu_model="Intel(R) N100",
    logical_cpus=4,
    usable_cpus=4.0,
    cpu_quota=None,
    memory_total_mb=15_700,
    memory_limit_mb=None,
    memory_available_mb=13_000,
    cpu_features=frozenset({"avx2", "avx_vnni"}),
    storage="nvme",
)
VM_2C_2G = replace(
    N100,
    cpu_model="QEMU Virtual CPU",
    logical_cpus=2,
    usable_cpus=2.0,
    memory_total_mb=1_967,
    memory_available_mb=1_400,
    storage="rotational",
)
SERVER = replace(
    N100,
    cpu_model="AMD EPYC 9554",
    logical_cpus=64,
    usable_cpus=64.0,
    memory_total_mb=257_000,
    memory_available_mb=250_000,
    cpu_features=frozenset({"avx2", "avx512f", "avx512_vnni"}),
    storage="ssd",
)
CONTAINER = replace(
    SERVER,
    usable_cpus=1.5,
    cpu_quota=1.5,
    memory_total_mb=64_000,
    memory_limit_mb=1_024,
    memory_available_mb=900,
)

DEFAULTS = parse_config({}, env={})
DEFAULT_ONLY = [KNOWN_MODELS[0]]


def plan(
    facts: HardwareFacts,
    raw: dict[str, object] | None = None,
    models: tuple[object, ...] | None = None,
) -> Plan:
    config = parse_config(raw or {}, env={})
    return make_plan(facts, config, list(KNOWN_MODELS) if models is None else DEFAULT_ONLY)


def params(p: Plan) -> int:
    return p.model.params


@pytest.mark.parametrize("facts", [PI4, PI5, N100, VM_2C_2G, SERVER, CONTAINER])
def test_every_plan_fits_the_machine(facts: HardwareFacts) -> None:
    p = plan(facts)
    assert 1 <= p.threads <= facts.cores
    assert p.worker_memory_mb <= facts.memory_mb
    assert p.context_tokens * p.model.kv_bytes_per_token <= p.kv_cache_mb * 2**20
    assert p.context_tokens <= p.model.context_max
    assert set(p.reasons) == {
        "tier",
        "threads",
        "model",
        "precision",
        "context_tokens",
        "max_batch",
        "kv_cache_mb",
        "worker_memory_mb",
    }
    assert all(reason for reason in p.reasons.values())


def test_raspberry_pi_4_basic_tier_small_model() -> None:
    p = plan(PI4)
    assert p.tier == "basic"
    assert p.threads == 3  # one core left for Home Assistant
    assert p.model.id == DEFAULT_MODEL_ID  # a larger one would decode too slowly on an A72
    assert p.precision == "int8"
    assert p.context_tokens == 8192  # Home Assistant asks for 8192 (num_ctx)


def test_raspberry_pi_5_standard_tier_larger_model() -> None:
    p = plan(PI5)
    assert p.tier == "standard"
    assert p.threads == 3
    assert params(p) > params(plan(PI4))  # dotprod and NVMe buy a bigger model
    assert p.est_decode_tok_s >= 15
    assert p.context_tokens == 8192


def test_n100_mini_pc_standard_tier() -> None:
    p = plan(N100)
    assert p.tier == "standard"
    assert p.threads == 3
    assert params(p) >= params(plan(PI5))


def test_two_core_two_gb_vm_is_minimal() -> None:
    p = plan(VM_2C_2G)
    assert p.tier == "minimal"
    assert p.threads == 2
    assert p.context_tokens == 4096  # a 2k-token Home Assistant request still fits
    assert p.max_batch <= 2


def test_big_server_large_tier_capped_threads() -> None:
    p = plan(SERVER)
    assert p.tier == "large"
    assert p.threads == 8  # decode is bandwidth-bound: more threads only add sync cost
    assert p.model.id == "smollm2-1.7b-instruct-int8"
    assert p.context_tokens == 8192
    assert p.max_batch == 16


def test_container_is_planned_by_its_limits_not_the_host() -> None:
    p = plan(CONTAINER)
    host = plan(SERVER)
    assert p.tier == "minimal"
    assert p.threads == 1  # quota 1.5 CPUs: a second thread would be throttled
    assert "quota 1.5" in p.reasons["threads"]
    assert p.worker_memory_mb <= 1_024
    assert params(p) < params(host)


def test_default_model_only_on_this_kind_of_machine() -> None:
    this_machine = replace(
        SERVER, logical_cpus=2, usable_cpus=2.0, memory_total_mb=24_105, memory_available_mb=23_000
    )
    p = make_plan(this_machine, DEFAULTS, DEFAULT_ONLY)
    assert (p.tier, p.threads, p.model.id) == ("basic", 2, DEFAULT_MODEL_ID)


def test_explicit_config_wins_over_auto() -> None:
    raw = {
        "engine": {"threads": 7, "max_batch": 3, "context_tokens": 512},
        "sandbox": {"memory_mb": 700},
        "model": {"name": DEFAULT_MODEL_ID},
    }
    p = plan(SERVER, raw)
    assert (p.threads, p.max_batch, p.context_tokens, p.worker_memory_mb) == (7, 3, 512, 700)
    assert p.model.id == DEFAULT_MODEL_ID
    assert all(
        "set in config" in p.reasons[k]
        for k in ("threads", "max_batch", "context_tokens", "worker_memory_mb", "model")
    )


def test_named_model_that_is_absent_is_a_config_error() -> None:
    with pytest.raises(PlanError, match=r"^model\.name: no model 'nope'"):
        plan(PI4, {"model": {"name": "nope"}})


def test_precision_filter() -> None:
    fp32 = replace(
        KNOWN_MODELS[0], id="smollm2-135m-instruct-fp32", precision="fp32", file_mb=515.0
    )
    both = [KNOWN_MODELS[0], fp32]
    assert make_plan(PI4, DEFAULTS, both).precision == "int8"
    p = make_plan(PI4, parse_config({"model": {"precision": "fp32"}}, env={}), both)
    assert (p.precision, p.model.id) == ("fp32", fp32.id)


def test_no_candidates_is_an_error() -> None:
    with pytest.raises(PlanError):
        make_plan(PI4, DEFAULTS, [])


@pytest.mark.parametrize("facts", [PI4, VM_2C_2G, replace(PI4, logical_cpus=2, usable_cpus=2.0)])
def test_a_home_assistant_request_fits_every_small_machine(facts: HardwareFacts) -> None:
    # HA's first request for a 22-entity home with 12 tools is 2,058 tokens, and the
    # engine keeps a quarter of the window (up to max_tokens) for the reply.
    p = plan(facts, models=tuple(DEFAULT_ONLY))
    reply = min(256, p.context_tokens // 4)
    assert p.context_tokens - reply >= 2_058 + 64
    assert p.context_tokens * p.model.kv_bytes_per_token <= p.kv_cache_mb * 2**20


def test_speed_estimate_divides_bandwidth_by_the_bytes_a_step_streams() -> None:
    # 2 AVX2 threads: 24 GiB/s. A model streaming 256 MiB a token: 96 tok/s exactly.
    assert decode_tok_s(N100, 2, 256 * 2**20) == pytest.approx(96.0)
    streaming = replace(KNOWN_MODELS[0], weight_bytes_per_token=256 * 2**20)
    p = make_plan(N100, parse_config({"engine": {"threads": 2}}, env={}), [streaming])
    # Plus the fixed cost of each layer.
    per_token = 1 / 96.0 + streaming.n_layers * LAYER_OVERHEAD_S
    assert p.est_decode_tok_s == pytest.approx(1 / per_token)


def test_speed_estimate_uses_streamed_bytes_not_the_file_size() -> None:
    # Same file, but a Q4 model streams ~0.3 of the bytes an 8-bit head-heavy one does.
    heavy = replace(KNOWN_MODELS[2], weight_bytes_per_token=int(KNOWN_MODELS[2].file_mb * 2**20))
    light = replace(heavy, weight_bytes_per_token=heavy.weight_bytes_per_token * 3 // 10)
    config = parse_config({"engine": {"threads": 2}}, env={})
    slow, fast = make_plan(N100, config, [heavy]), make_plan(N100, config, [light])
    fixed = heavy.n_layers * LAYER_OVERHEAD_S
    streaming = 1 / slow.est_decode_tok_s - fixed
    assert 1 / fast.est_decode_tok_s - fixed == pytest.approx(streaming * 0.3, rel=1e-6)
    # Without the figure (older folders) the file size stands in: the same as `heavy`.
    unknown = replace(heavy, weight_bytes_per_token=0)
    assert make_plan(N100, config, [unknown]).est_decode_tok_s == pytest.approx(
        slow.est_decode_tok_s, rel=1e-6
    )


def test_spec_from_manifest_reads_the_streamed_bytes(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(bytes(1000))
    manifest = {
        "id": "m-gguf",
        "parameters": 5,
        "precision": "gguf",
        "config": {"n_layers": 2, "n_kv_heads": 1, "head_dim": 8},
        "graph": {"after": {"weight_bytes_per_token": 640}},
    }
    spec = spec_from_manifest(manifest, tmp_path)
    assert (spec.weight_bytes_per_token, spec.decode_bytes) == (640, 640.0)
    del manifest["graph"]
    assert spec_from_manifest(manifest, tmp_path).decode_bytes == 1000.0


def test_bytes_that_fit_the_last_level_cache_stream_faster() -> None:
    # 16 MiB of weights: all in a 32 MiB L3, read CACHE_SPEEDUP times faster than from DRAM.
    cached = replace(N100, cache_mb=32.0)
    small = 16 * 2**20
    assert decode_tok_s(cached, 2, small) == pytest.approx(
        decode_tok_s(N100, 2, small) * CACHE_SPEEDUP
    )
    # 1 GiB: only its first 32 MiB come from the cache, the rest is DRAM-bound.
    big = 2**30
    expected = 1 / ((32 * 2**20 / CACHE_SPEEDUP + (big - 32 * 2**20)) / (24 * 2**30))
    assert decode_tok_s(cached, 2, big) == pytest.approx(expected)
    assert decode_tok_s(cached, 2, big) < decode_tok_s(N100, 2, big) * 1.1


def test_each_layer_adds_a_fixed_cost() -> None:
    # 24 GiB/s, 256 MiB: 1/96 s of streaming, then 30 layers' fixed cost on top.
    with_layers = decode_tok_s(N100, 2, 256 * 2**20, layers=30)
    assert 1 / with_layers == pytest.approx(1 / 96.0 + 30 * LAYER_OVERHEAD_S)
    # A small model is held back by it more than a large one.
    small, large = 100 * 2**20, 1400 * 2**20
    ratio_small = decode_tok_s(N100, 2, small, 30) / decode_tok_s(N100, 2, small)
    ratio_large = decode_tok_s(N100, 2, large, 28) / decode_tok_s(N100, 2, large)
    assert ratio_small < ratio_large < 1.0
