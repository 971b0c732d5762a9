"""Benchmark of the llm quick tier: the variant table, and how close decoding comes to the memory wall.

    .venv/bin/python -m benchmarks.llm [--store sqlite:///mlflow.db] [--no-kernels]

1. Reads the finished ``llm`` runs of the quick tier from the store (run ``suite sweep llm`` first) and
   prints, per variant: perplexity, decode tokens/s, the decode bound (the bandwidth the run measured with
   its read-only probe, right after decoding, in its own process, divided by the weight bytes one token
   reads), their ratio, and, where the ratio is below 80%, one line saying why; then each cell's CPU
   seconds and their sum (the grid's cost).
2. Unless ``--no-kernels``: times the compiled matrix-vector kernel alone (SmolLM2's layer shapes, one
   thread) against the same probe, in float32 and bfloat16, which separates the kernel's own reach from
   the rest of a decoding step, and torch's eager ``F.linear`` (MKL, oneDNN) beside it; and prints the
   CPU's flags that bear on it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

TARGET = 0.8  # decode at or above 80% of the memory-read bound
_ORDER = ("fp32", "bf16", "int8", "fp8_rowwise", "pruned50", "pruned50 2:4", "wanda50", "wanda50 2:4")


def _variant(params: dict[str, str]) -> str:
    return params["method"] + (" 2:4" if params.get("prune_pattern") == "2:4" else "")  # a pruning method's key


def _reason(name: str, metrics: list[dict[str, float]], kernels: dict[str, float]) -> str:
    """Why a variant decodes below the target, from what its runs recorded and the kernel timings (``kernels``:
    :func:`kernel_reach`'s fractions of the probe, keyed by kernel and dtype, e.g. ``"compiled bfloat16"``)."""
    if any(m.get("compute/speed_emulated") for m in metrics):
        what = "int8 weights converted to float on every call (torchao eager)" if name == "int8" else \
            "FP8 emulated: e4m3 operands rounded, then float32 products (no FP8 GEMM on a CPU)"
        return f"emulated, not a kernel speed: {what}"
    if not all(m.get("compute/decode_compiled") for m in metrics):
        return "decoded eagerly (decode=eager): MKL's matrix-vector products and ~600 Python-level ops per token"
    dtype = "bfloat16" if name == "bf16" else "float32"
    compiled, library = kernels.get(f"compiled {dtype}"), kernels.get(f"F.linear {dtype}")
    if compiled is None:
        return "see the kernel timings (run without --no-kernels)"
    reach = f"the compiled matrix-vector kernel alone reads at {compiled:.0%} of the probe"
    if dtype == "bfloat16":
        return (f"{reach} (it widens bf16 to fp32 in registers and reduces each row in one chain: bound by "
                f"instructions, not memory) and torch's own bf16 F.linear (oneDNN) at {library:.0%}: no kernel "
                "torch offers on this CPU uses its AVX512-BF16 dot products for a matrix-vector product")
    return f"{reach}; attention, norms and the compiled call's Python wrapper (~0.7 ms a token) add the rest"


def report(store: str | None, kernels: dict[str, float]) -> None:
    from suite.tracking import Tracker

    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for run in Tracker(store).runs("llm", status="FINISHED"):
        if run.tags.get("suite.tier") == "quick":
            groups[_variant(run.params)].append(run.metrics)
    if not groups:
        print("no finished llm runs of the quick tier in the store (run: suite sweep llm)")
        return
    print(f"{'variant':13} {'n':>2} {'perplexity':>12} {'decode t/s':>11} {'bound t/s':>10} {'of bound':>8}  why below "
          f"{TARGET:.0%}")
    for name in sorted(groups, key=lambda n: _ORDER.index(n) if n in _ORDER else len(_ORDER)):
        rows = groups[name]
        ppl = [m["utility/perplexity"] for m in rows]
        decode = statistics.mean(m["compute/decode_tokens_per_s"] for m in rows)
        bound = statistics.mean(m["compute/decode_bound_tokens_per_s"] for m in rows)
        ratio = statistics.mean(m["compute/decode_of_bound"] for m in rows)
        why = _reason(name, rows, kernels) if ratio < TARGET else ""
        print(f"{name:13} {len(rows):2d} {_fmt(ppl):>12} {decode:11.1f} {bound:10.1f} {ratio:8.0%}  {why}")
    print()
    print(f"{'variant':13} {'cpu s per cell':>16}  (single-threaded cells; the grid's cost is their sum)")
    total = 0.0
    for name in sorted(groups, key=lambda n: _ORDER.index(n) if n in _ORDER else len(_ORDER)):
        cpu = [m["compute/cpu_s"] for m in groups[name]]
        total += sum(cpu)
        print(f"{name:13} {', '.join(f'{c:.1f}' for c in cpu):>16}")
    print(f"{'total':13} {total:16.1f}")


def _fmt(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f}±{spread:.2f}"


def kernel_reach(*, repeats: int = 9) -> dict[str, float]:
    """Read rate of matrix-vector kernels over SmolLM2-shaped weights, as a fraction of the probe: the compiled
    kernel the decoder uses and torch's eager ``F.linear`` (MKL in float32, oneDNN in bfloat16), keyed
    ``"compiled float32"``, ``"F.linear bfloat16"`` and so on. Each is the median over ``repeats`` of kernel rate /
    probe rate, each pair timed back to back on the CPU clock (as the cells time decoding), so that a shared
    machine's changing load moves both together."""
    import torch
    import torch.nn.functional as F

    from tasks.llm.decode import _matvec, inductor_cache_dir

    inductor_cache_dir()
    torch.set_num_threads(1)
    out: dict[str, float] = {}
    for dtype in (torch.float32, torch.bfloat16):
        weights = [(torch.randn(1536, 576) * 0.02).to(dtype) for _ in range(60)]  # 60 FFN matrices: beyond cache
        x = torch.randn(1, 576).to(dtype)
        compiled = torch.compile(lambda x, ws: [_matvec(x, w) for w in ws], dynamic=False)
        for kind, step in (("compiled", compiled), ("F.linear", lambda x, ws: [F.linear(x, w) for w in ws])):
            name = f"{kind} {str(dtype).removeprefix('torch.')}"
            rate, out[name] = _read_rate(step, x, weights, repeats)
            print(f"{name + ' matrix-vector kernel':35}: {rate:5.1f} GB/s read, {out[name]:.0%} of the probe "
                  f"(median of {repeats} back-to-back pairs, CPU time)")
    flags = set(Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n")[0].split()) \
        if Path("/proc/cpuinfo").exists() else set()
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni") if f in flags]
    print(f"CPU flags: {' '.join(shown) or 'unknown'}")
    return out


def _read_rate(step, x, weights, repeats: int) -> tuple[float, float]:
    """(median GB/s, median fraction of the probe) of ``step(x, weights)`` over ``repeats`` after one warm-up."""
    import torch

    from tasks.llm.measure import memory_read_gb_per_s

    nbytes = sum(w.numel() * w.element_size() for w in weights)
    rates, ratios = [], []
    with torch.inference_mode():
        step(x, weights)
        for _ in range(repeats):
            start = time.process_time()
            step(x, weights)
            rates.append(nbytes / (time.process_time() - start) / 1e9)
            ratios.append(rates[-1] / memory_read_gb_per_s())
    return statistics.median(rates), statistics.median(ratios)


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=os.environ.get("MLFLOW_TRACKING_URI"), help="MLflow tracking URI")
    parser.add_argument("--no-kernels", action="store_true", help="skip the kernel timings")
    args = parser.parse_args()
    kernels = {} if args.no_kernels else kernel_reach()
    if kernels:
        print()
    report(args.store, kernels)


if __name__ == "__main__":
    main()
