"""Accuracy against compression on the demo: ``stc eval --bench demo`` (the demo model, STC's defaults
elsewhere) over a range of ``--tokens-per-frame`` (the pruner alone), ``--update-ratio`` and
``--cache-interval`` (the cacher alone), STC off first, all in one process on the same machine. Prints a
markdown table for ``docs/benchmarks.md``: accuracy overall and per category, and the per-frame cost of
the ViT, the compression and the prefill, each run's own.

    .venv/bin/python scripts/demo_sweep.py --out runs/sweep
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stc_cli.configs import EvalConfig
from stc_cli.evaluation.evaluate import evaluate
from stc_cli.scoring import score_results
from stc_cli.timings import summarize

TOKENS = (16, 8, 5, 3, 2, 1)  # of the demo model's 16 per frame; 5 is STC's share (60 of 196)
RATIOS = (1.0, 0.5, 0.25, 0.1, 0.05)  # 0.25 is STC's default
INTERVALS = (4, 8, 16)  # frames from one reference to the next; 2 is STC's default (the 0.25 row)


def settings() -> list[tuple[str, dict]]:
    """``(label, EvalConfig fields)`` of each run: the baseline, then one knob at a time."""
    runs = [("STC off", {"stc": False})]
    runs += [(f"pruner, {k} of 16 tokens", {"cacher": False, "tokens_per_frame": k}) for k in TOKENS]
    runs += [(f"cacher, update ratio {r}", {"pruner": False, "update_ratio": r}) for r in RATIOS]
    runs += [
        (f"cacher, a reference every {n} frames", {"pruner": False, "cache_interval": n}) for n in INTERVALS
    ]
    runs += [("STC defaults (both)", {})]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"), help="folder for the run folders")
    args = parser.parse_args()
    rows = []
    for number, (label, fields) in enumerate(settings()):
        output = args.out / f"{number:02d}"
        evaluate(EvalConfig(bench="demo", output=str(output), overwrite=True, **fields))
        report = score_results(output)
        records = [json.loads(line) for line in (output / "samples.jsonl").read_text().splitlines()]
        cost = summarize(records).ms_per_frame
        rows.append((label, report, cost))
        print(f"{label}: {report.overall:.1f}", flush=True)
    categories = list(rows[0][1].categories)
    print("\n| setting | accuracy | " + " | ".join(categories) + " | ViT ms | compress ms | prefill ms |")
    print("|---|---:|" + "---:|" * len(categories) + "---:|---:|---:|")
    for label, report, cost in rows:
        accuracy = " | ".join(f"{report.categories[c]:.1f}" for c in categories)
        stages = " | ".join(
            f"{cost[s]:.2f}" if cost.get(s) is not None else "" for s in ("vit", "compress", "prefill")
        )
        print(f"| {label} | {report.overall:.1f} | {accuracy} | {stages} |")


if __name__ == "__main__":
    main()
