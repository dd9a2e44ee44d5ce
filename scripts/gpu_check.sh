#!/usr/bin/env bash
# scripts/gpu_check.sh OUTDIR: the checks that need a CUDA GPU, in one go (under 8 minutes on one
# H100-class GPU, no network): the `gpu` tests, `stc bench` at full depth in float16, and `stc eval` with
# random:full weights over the demo with STC on and off. Writes its logs, nvidia-smi and summary.json
# (every ratio, STC on / off) into OUTDIR. Without CUDA it says so in one line and exits 0.
# Run it from the project's root with the project installed (or on PYTHONPATH).
set -uo pipefail
OUT=${1:?usage: scripts/gpu_check.sh OUTDIR}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check"
    exit 0
fi
mkdir -p "$OUT"
LOG="$OUT/log.txt"
step() { echo "=== $1 ($(date +%T))" | tee -a "$LOG"; }

step environment
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, \
transformers.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee -a "$LOG"

step "pytest -m gpu"
timeout 180 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests > "$OUT/gpu-tests.txt" 2>&1
echo "gpu tests rc $?" | tee -a "$LOG"
tail -3 "$OUT/gpu-tests.txt" | tee -a "$LOG"

step "stc bench, full depth, float16"
timeout 200 "$PY" -m stc_cli bench --json > "$OUT/bench.json" 2> "$OUT/bench.err"
echo "bench rc $?" | tee -a "$LOG"

RUNS=$(mktemp -d)
for variant in base stc; do
    step "stc eval random:full demo, $variant"
    flags=(--model rekv --model-path random:full --bench demo --max-new-tokens 16 --output "$RUNS/$variant")
    [ "$variant" = base ] && flags+=(--no-stc)
    timeout 100 "$PY" -m stc_cli eval "${flags[@]}" > "$OUT/eval-$variant.txt" 2>&1
    echo "eval $variant rc $?" | tee -a "$LOG"
done
"$PY" -m stc_cli score "$RUNS/base" "$RUNS/stc" --json > "$OUT/score.json" 2>> "$LOG"

step summary
"$PY" - "$OUT" <<'PYTHON' 2>&1 | tee -a "$LOG"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
summary = {"device": None, "bench": None, "eval": None}
try:
    import torch

    summary["device"] = torch.cuda.get_device_name(0)
except Exception as error:  # noqa: BLE001 (a summary, whatever broke)
    summary["device"] = f"unknown: {error}"
try:
    bench = json.loads((out / "bench.json").read_text())
    summary["bench"] = {
        "vit_ratio": bench["vit"]["ratio"],
        "prefill_ratio": bench["prefill"]["ratio"],
        "rekv_prefill_ratio": bench["prefill"].get("rekv_ratio"),
    }
except Exception as error:  # noqa: BLE001
    summary["bench"] = f"unreadable: {error}"
try:
    base, stc = json.loads((out / "score.json").read_text())
    on, off = stc["timings"]["ms_per_frame"], base["timings"]["ms_per_frame"]
    ratios = {stage: on[stage] / off[stage] for stage in off if off[stage]}
    ratios["frame"] = sum(on.values()) / sum(off.values())
    ratios["answer"] = stc["timings"]["answer_ms"] / base["timings"]["answer_ms"]
    summary["eval"] = {"ms_per_frame_off": off, "ms_per_frame_on": on, "on_over_off": ratios}
except Exception as error:  # noqa: BLE001
    summary["eval"] = f"unreadable: {error}"
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary))
PYTHON
step done
