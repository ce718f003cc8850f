"""INT8 (or GGUF-exact) vs FP32 quality on a long English text: perplexity and top-1
next-token agreement.

    .venv/bin/python benchmarks/quality.py [--gguf PATH] [--models-dir DIR] [--json OUT]
        [--precision int8|gguf]

`--precision gguf` scores the folder of `model prepare --precision gguf` (the file's own
blocks) against the same FP32 reference (the GGUF dequantized to float32).

Both models are prepared with `prepare_model` (timed; a fresh models dir by default, so the
times are those of a first `model prepare`). The whole text is scored as one window.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from assistant.convert import prepare_model
from assistant.convert.quality import compare
from assistant.model.manager import ModelManager
from assistant.model.manifest import Manifest, Precision

HERE = Path(__file__).resolve().parent
TARGET_PPL_RATIO = 1.02
TARGET_AGREEMENT = 0.97
TARGET_INT8_BYTES = 160_000_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="INT8 or GGUF-exact vs FP32: perplexity and agreement"
    )
    parser.add_argument("--gguf", type=Path, default=None, help="default: SmolLM2-135M-Instruct")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: a fresh temp dir")
    parser.add_argument("--text", type=Path, default=HERE / "data" / "english.txt")
    parser.add_argument("--json", type=Path, default=HERE / "out" / "quality.json")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", choices=("int8", "gguf"), default="int8")
    args = parser.parse_args(argv)
    cand: Precision = args.precision

    with tempfile.TemporaryDirectory(prefix="edge-quality-") as scratch:
        models_dir = args.models_dir or Path(scratch)
        folders: dict[str, Path] = {}
        prepare_s: dict[str, float] = {}
        for precision in ("fp32", cand):
            start = time.perf_counter()
            folders[precision] = prepare_model(models_dir, args.gguf, precision)
            prepare_s[precision] = time.perf_counter() - start
        manager = ModelManager(models_dir)
        fp32 = manager.load_model(folders["fp32"], threads=args.threads)
        model = manager.load_model(folders[cand], threads=args.threads)
        ids = model.tokenizer.encode(args.text.read_text(encoding="utf-8")).ids
        if len(ids) > model.manifest.context_length:
            raise SystemExit(f"text is {len(ids)} tokens, longer than the context window")
        start = time.perf_counter()
        report = compare(fp32.session, model.session, ids)
        score_s = time.perf_counter() - start
        manifests = {p: Manifest.read(f) for p, f in folders.items()}

    sizes = {p: m.size_bytes() for p, m in manifests.items()}
    checks = {
        "ppl_ratio": report.ppl_ratio <= TARGET_PPL_RATIO,
        "top1_agreement": report.top1_agreement >= TARGET_AGREEMENT,
    }
    if cand == "int8":
        checks["int8_folder_bytes"] = sizes["int8"] <= TARGET_INT8_BYTES
    print(
        f"model {manifests[cand].id.removesuffix('-' + cand)}, text {args.text.name}: "
        f"{report.tokens} tokens, scored in {score_s:.1f}s"
    )
    print(
        f"{'precision':9} {'PPL':>8} {'xFP32':>7} {'agree':>6} {'MB':>7} {'nodes':>11} "
        f"{'prepare s':>9}"
    )
    for precision in ("fp32", cand):
        m = manifests[precision]
        ppl = report.ppl_reference if precision == "fp32" else report.ppl
        ratio = 1.0 if precision == "fp32" else report.ppl_ratio
        agree = 1.0 if precision == "fp32" else report.top1_agreement
        nodes = f"{m.graph['before']['nodes']}->{m.graph['after']['nodes']}"
        print(
            f"{precision:9} {ppl:8.2f} {ratio:7.4f} {agree:6.3f} {sizes[precision] / 1e6:7.1f} "
            f"{nodes:>11} {prepare_s[precision]:9.1f}"
        )
    print("targets:", ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in checks.items()))

    result = {
        "text": args.text.name,
        "machine": platform.processor() or platform.machine(),
        "quality": report.as_dict(),
        "folder_bytes": sizes,
        "prepare_seconds": prepare_s,
        "graph": {p: m.graph for p, m in manifests.items()},
        "precision": cand,
        "quantization": manifests[cand].quantization,
        "flops_per_token": manifests[cand].graph["after"]["flops_per_token"],
        "checks": checks,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
