"""Benchmark of the llm quick tier: the variant table and how far decoding is from the memory wall.

    .venv/bin/python -m benchmarks.llm [--store sqlite:///mlflow.db] [--threads 1]

1. Measures this machine's memory bandwidth with a large tensor copy (256 MiB source; the copy
   reads and writes each byte, so bytes moved = 2 x size), best of several repeats.
2. Reads the finished ``llm`` runs from the store (run ``suite sweep llm`` first) and prints, per
   variant, mean and spread over seeds of perplexity, next-token accuracy, prefill and decode
   tokens/s, peak RSS, weight bytes, memorization rates and mean verbatim prefixes (probes, controls); and the decode speed the bandwidth would
   allow if every weight byte were read once per generated token (the bound of batch-one decoding).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict


def memory_bandwidth_gb_per_s(*, mib: int = 256, repeats: int = 5, threads: int = 1) -> float:
    """Bytes read plus written per second by ``dst.copy_(src)`` on two large float32 tensors."""
    import torch

    torch.set_num_threads(threads)
    src = torch.rand(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best / 1e9


def _fmt(values: list[float], digits: int = 2) -> str:
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f}±{spread:.{digits}f}"


def report(store: str | None, bandwidth: float) -> None:
    from suite.tracking import Tracker

    runs = Tracker(store).runs("llm", status="FINISHED") if store else Tracker().runs("llm", status="FINISHED")
    groups: dict[str, list] = defaultdict(list)
    for run in runs:
        p = run.params
        name = p["method"] + (" 2:4" if p.get("prune_pattern") == "2:4" and p["method"] == "pruned50" else "")
        groups[name].append(run.metrics)
    print(f"memory bandwidth (tensor copy): {bandwidth:.1f} GB/s")
    head = (f"{'variant':12} {'n':>2} {'perplexity':>12} {'next-tok acc':>12} {'prefill t/s':>12} {'decode t/s':>11} "
            f"{'RSS MiB':>7} {'weight MB':>9} {'mem rate':>9} {'control':>9} {'matched tok':>11} {'control':>9} "
            f"{'bound t/s':>9} {'of bound':>8}")
    print(head)
    for name in ("fp32", "bf16", "int8", "fp8_rowwise", "pruned50", "pruned50 2:4"):
        rows = groups.get(name)
        if not rows:
            continue
        col = lambda key: [r[key] for r in rows]  # noqa: E731
        wbytes = statistics.mean(col("compute/weight_bytes"))
        decode = statistics.mean(col("compute/decode_tokens_per_s"))
        bound = bandwidth * 1e9 / wbytes  # every weight byte read once per token (the tied head included)
        print(f"{name:12} {len(rows):2d} {_fmt(col('utility/perplexity')):>12} "
              f"{_fmt(col('utility/next_token_accuracy'), 3):>12} {_fmt(col('compute/prefill_tokens_per_s'), 0):>12} "
              f"{_fmt(col('compute/decode_tokens_per_s'), 1):>11} {statistics.mean(col('compute/peak_rss_mb')):7.0f} "
              f"{wbytes / 1e6:9.0f} {_fmt(col('privacy/memorization_rate')):>9} "
              f"{_fmt(col('privacy/memorization_control')):>9} "
              f"{_fmt(col('privacy/memorization_matched_tokens'), 1):>11} "
              f"{_fmt(col('privacy/memorization_matched_control'), 1):>9} {bound:9.1f} {decode / bound:8.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=os.environ.get("MLFLOW_TRACKING_URI"), help="MLflow tracking URI")
    parser.add_argument("--threads", type=int, default=1, help="threads of the copy (the sweep's cells use 1)")
    args = parser.parse_args()
    report(args.store, memory_bandwidth_gb_per_s(threads=args.threads))


if __name__ == "__main__":
    main()
