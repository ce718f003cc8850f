"""Outlier channels of the exact GGUF path: which are chosen, and that shifting them keeps
the whole decoder's function (at level 0, where nothing is rounded but fp32 sums)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from assistant.convert.exact import GROUPS, read_blocks
from assistant.convert.gguf_loader import load_gguf
from assistant.convert.outliers import choose
from assistant.convert.prepare_gguf import build_gguf_graph
from assistant.convert.smooth import LayerStats
from assistant.model.feeds import prefill_logits
from assistant.model.session import open_session
from tests.test_model_tiny_gguf import TinySpec, write_tiny_gguf


def test_outliers_are_divided_down_to_the_ratio() -> None:
    maxima = np.ones(64, np.float32)
    maxima[[3, 10]] = [50.0, 10.0]
    shifts = choose(maxima, ratio=4.0, limit=16)
    assert shifts is not None
    assert shifts.channels.tolist() == [3, 10]
    assert shifts.powers.tolist() == [4, 2]  # 50 / 16 and 10 / 4 are <= 4
    assert np.all(maxima[shifts.channels] / shifts.divisors() <= 4.0)


def test_flat_activations_need_no_shift() -> None:
    assert choose(np.linspace(1.0, 3.0, 64).astype(np.float32), ratio=4.0) is None


def test_the_largest_outliers_are_kept_within_the_limit() -> None:
    maxima = np.ones(64, np.float32)
    maxima[[1, 2, 3]] = [10.0, 30.0, 20.0]
    shifts = choose(maxima, ratio=4.0, limit=2)
    assert shifts is not None and shifts.channels.tolist() == [2, 3]


def _stats(hidden: int, ffn: int, layers: int) -> list[LayerStats]:
    rng = np.random.default_rng(3)

    def maxima(size: int) -> np.ndarray:
        m = rng.uniform(0.5, 1.5, size).astype(np.float32)
        m[rng.choice(size, 3, replace=False)] = [20.0, 60.0, 200.0]
        return m

    return [LayerStats(maxima(hidden), maxima(hidden), maxima(hidden), maxima(ffn))] * layers


@pytest.mark.parametrize("matrix_type", ["Q4_1", "Q8_0"])
def test_shifted_decoder_computes_the_same_logits(matrix_type: str, tmp_path: Path) -> None:
    spec = TinySpec(matrix_type=matrix_type)
    source = tmp_path / f"tiny.{matrix_type}.gguf"
    write_tiny_gguf(source, spec)
    model, (blocks, _) = load_gguf(source), read_blocks(source)
    levels = dict.fromkeys(GROUPS, 0)
    stats = _stats(spec.hidden, spec.ffn, spec.n_layers)
    logits = []
    for name, layer_stats in (("plain", None), ("shifted", stats)):
        path = tmp_path / f"{name}.onnx"
        onnx.save_model(build_gguf_graph(model, blocks, levels, layer_stats), path)
        logits.append(prefill_logits(open_session(path, threads=1), [1, 5, 9, 2, 7, 3]))
    plain, shifted = logits
    np.testing.assert_allclose(shifted, plain, rtol=1e-4, atol=1e-4 * np.abs(plain).max())
