#!/usr/bin/env bash
# scripts/gpu_check.sh OUTDIR: the checks that need a CUDA GPU, in one go (under 8 minutes on one
# H100-class GPU, no network): the `gpu` tests; `stc bench` at full depth in float16 (ViT at 1 and 16
# frames per call: eager, from CUDA graphs, and compiled too; prefill plain, through ReKV's memory and
# with its window full, eagerly at 1 and 16 frames per call and on graphs; decoding); `stc eval` with
# random:full weights over 16 demo questions with STC on and off; and `stc stream` on a 60 s clip. Writes
# its logs, nvidia-smi and summary.json (every ratio, STC on / off) into OUTDIR. Without CUDA it says so
# in one line and exits 0.
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
# Each step's timeout is its own cap or what is left of 7 min 40 s, whichever is less (10 s at least),
# so that the whole check ends within 8 minutes and the summary is still written.
DEADLINE=$((SECONDS + 460))
cap() { local left=$((DEADLINE - SECONDS)); echo $((left < $1 ? (left > 10 ? left : 10) : $1)); }

step environment
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, \
transformers.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee -a "$LOG"

step "pytest -m gpu"
timeout "$(cap 180)" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests > "$OUT/gpu-tests.txt" 2>&1
echo "gpu tests rc $?" | tee -a "$LOG"
tail -3 "$OUT/gpu-tests.txt" | tee -a "$LOG"

# The ViT sides replayed from CUDA graphs (stock, STC and ToMe alike), at 1 and 16 frames per call; only
# their ViT rows are read, so the LLM is cut to one layer.
for per_call in 1 16; do
    step "stc bench --cuda-graphs, $per_call frames per ViT call"
    timeout "$(cap 90)" "$PY" -m stc_cli bench --json --cuda-graphs --frames-per-chunk "$per_call" --compress tome \
        --llm-layers 1 --decode-tokens 0 --state-frames 0 > "$OUT/bench-graphs-$per_call.json" \
        2> "$OUT/bench-graphs-$per_call.err"
    echo "bench graphs $per_call rc $?" | tee -a "$LOG"
done

# Both ViT sides' layers through torch.compile (the same function; compiling is untimed), then replayed.
for per_call in 1 16; do
    step "stc bench --compile --cuda-graphs, $per_call frames per ViT call"
    timeout "$(cap 150)" "$PY" -m stc_cli bench --json --compile --cuda-graphs --frames-per-chunk "$per_call" \
        --llm-layers 1 --decode-tokens 0 --state-frames 0 > "$OUT/bench-compiled-$per_call.json" \
        2> "$OUT/bench-compiled-$per_call.err"
    echo "bench compiled $per_call rc $?" | tee -a "$LOG"
done

# The LLM side on graphs too (experimental --llm-graphs: ReKV's windows in ring buffers, the plain rows in
# static KV caches, each frame's prefill and each generated token replayed), over the same long stream as
# the eager run below.
step "stc bench --cuda-graphs --llm-graphs, long stream"
timeout "$(cap 150)" "$PY" -m stc_cli bench --json --cuda-graphs --llm-graphs --long-stream --decode-tokens 16 \
    --state-frames 0 > "$OUT/bench-llm-graphs.json" 2> "$OUT/bench-llm-graphs.err"
echo "bench llm graphs rc $?" | tee -a "$LOG"

# One frame per call, ReKV's window filled first (n_local 15000: 77 frames of 196 tokens, 250 of 60),
# 16 decoded tokens per answer; the compression baselines beside STC at its budget.
step "stc bench, full depth, float16, long stream, baselines"
timeout "$(cap 240)" "$PY" -m stc_cli bench --json --long-stream --decode-tokens 16 \
    --compress tome,vidcom2,visionzip,dtd > "$OUT/bench.json" 2> "$OUT/bench.err"
echo "bench rc $?" | tee -a "$LOG"

RUNS=$(mktemp -d)
for variant in base stc; do
    step "stc eval random:full demo, $variant"
    # the first 16 questions: per-frame timings need no more, and the check stays under 8 minutes
    flags=(--model rekv --model-path random:full --bench demo --limit 16 --max-new-tokens 16)
    flags+=(--output "$RUNS/$variant")
    [ "$variant" = base ] && flags+=(--no-stc)
    timeout "$(cap 100)" "$PY" -m stc_cli eval "${flags[@]}" > "$OUT/eval-$variant.txt" 2>&1
    echo "eval $variant rc $?" | tee -a "$LOG"
done
"$PY" -m stc_cli score "$RUNS/base" "$RUNS/stc" --json > "$OUT/score.json" 2>> "$LOG"

# Live mode: a 60 s synthetic clip as fast as the model goes (--speed 0: the headroom), STC on and off,
# end to end with the LLM on graphs too (--llm-graphs; the eval runs above keep it eager, the default).
CLIP="$RUNS/live-60s.mp4"
"$PY" - "$CLIP" <<'PYTHON' 2>> "$LOG"
import sys, av, numpy as np
with av.open(sys.argv[1], "w") as c:
    s = c.add_stream("mpeg4", rate=10); s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
    for i in range(600):
        img = np.zeros((360, 640, 3), np.uint8); img[:, (4 * i) % 600:(4 * i) % 600 + 40] = (255, 128, 0)
        for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")): c.mux(packet)
    for packet in s.encode(): c.mux(packet)
PYTHON
for stc in stc no-stc; do
    step "stc stream random:full, --$stc, --speed 0, --llm-graphs"
    timeout "$(cap 90)" "$PY" -m stc_cli stream "$CLIP" --model rekv --model-path random:full --"$stc" --speed 0 --llm-graphs \
        --json --no-stdin --max-new-tokens 16 --ask "20: What is happening?" \
        --ask "40: Which way does the bar move? | A. left | B. right" --ask "58: What changed?" \
        2>> "$LOG" | tail -1 > "$OUT/stream-$stc.json"
    echo "stream $stc rc $?" | tee -a "$LOG"
done

# Last, so that it is the step a slow machine cuts: the paper's "encode 16 frames" per call, the ViT, and
# the pruner and prefill a chunk per call too, as `stc eval --encode-chunk 16` runs them (the LLM at full
# depth, its window filled first; one repeat).
step "stc bench, 16 frames per call"
timeout "$(cap 120)" "$PY" -m stc_cli bench --json --frames-per-chunk 16 --long-stream --decode-tokens 0 \
    --repeats 1 --state-frames 0 > "$OUT/bench-16.json" 2> "$OUT/bench-16.err"
echo "bench 16 rc $?" | tee -a "$LOG"

step summary
"$PY" - "$OUT" <<'PYTHON' 2>&1 | tee -a "$LOG"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
summary = {"device": None, "bench": None, "launches": None, "eval": None}
try:
    import torch

    summary["device"] = torch.cuda.get_device_name(0)
except Exception as error:  # noqa: BLE001 (a summary, whatever broke)
    summary["device"] = f"unknown: {error}"
def bench_rows(path: Path) -> dict:
    """Each row of one `stc bench --json` report: STC off, on (ms per frame or per token) and on / off."""
    bench = json.loads(path.read_text())
    vit, prefill = bench["vit"], bench["prefill"]
    graphs = ("_compiled" if vit.get("compiled") else "") + ("_graphs" if vit.get("cuda_graphs") else "")
    rows = {f"vit_{vit['frames_per_chunk']}_frames_per_call{graphs}": (vit, "full_ms_per_frame", "stc_ms_per_frame")}
    g = "_graphs" if prefill.get("llm_graphs") else ""  # --llm-graphs: every LLM row replayed
    n = prefill.get("frames_per_call", 1)  # the pruner and prefill take a ViT chunk per call
    calls = f"_{n}_frames_per_call" if n > 1 else ""
    rows |= {f"prefill{g}{calls}": (prefill, "full_ms_per_frame", "pruned_ms_per_frame")}
    rows |= {f"rekv{g}_prefill{calls}": (prefill, "rekv_full_ms_per_frame", "rekv_pruned_ms_per_frame")}
    if "long_stream" in bench:
        rows |= {f"rekv{g}_prefill_window_full{calls}": (bench["long_stream"], "full_ms_per_frame", "pruned_ms_per_frame")}
    if "frame" in bench:  # ViT + pruner + the model's prefill per frame (ReKV's, window full here)
        rows |= {f"frame{g}{calls}": (bench["frame"], "full_ms", "stc_ms")}
    if "tome_r" in vit:
        rows |= {f"vit_{vit['frames_per_chunk']}_frames_per_call_tome{graphs}": (vit, "full_ms_per_frame", "tome_ms_per_frame")}
    if baselines := bench.get("baselines"):  # each method's compress ms per frame ("on") vs STC-Pruner's
        stc_ms = baselines["stc"]["ms_per_frame"]
        for name, method in baselines.items():
            if name != "stc":
                rows |= {f"compress_{name}": ({"stc": stc_ms, name: method["ms_per_frame"]}, "stc", name)}
    if "decode" in bench:
        decode = bench["decode"]
        rows |= {f"decode{g}_ms_per_token": (decode, "full_ms_per_token", "pruned_ms_per_token")}
        rows |= {f"rekv{g}_decode_ms_per_token": (decode, "rekv_full_ms_per_token", "rekv_pruned_ms_per_token")}
    return {name: {"off": b[off], "on": b[on], "ratio": b[on] / b[off]} for name, (b, off, on) in rows.items()}


summary["bench"] = {}
runs = ["bench.json", "bench-llm-graphs.json", "bench-16.json"]
runs += [f"bench-{kind}-{per_call}.json" for kind in ("graphs", "compiled") for per_call in (1, 16)]
for name in runs:
    try:
        rows = bench_rows(out / name)
        # The other runs cut the LLM to one layer: only their ViT rows count.
        whole = name in ("bench.json", "bench-llm-graphs.json", "bench-16.json")
        summary["bench"] |= {k: v for k, v in rows.items() if whole or k.startswith("vit_")}
    except Exception as error:  # noqa: BLE001
        summary["bench"][name] = f"unreadable: {error}"
try:  # the eager run's operators per step (the census) beside the kernels the profiler saw
    summary["launches"] = json.loads((out / "bench.json").read_text())["launches"]
except Exception as error:  # noqa: BLE001
    summary["launches"] = f"unreadable: {error}"
try:
    base, stc = json.loads((out / "score.json").read_text())
    on, off = stc["timings"]["ms_per_frame"], base["timings"]["ms_per_frame"]
    ratios = {stage: on[stage] / off[stage] for stage in off if off[stage]}
    ratios["frame"] = sum(on.values()) / sum(off.values())
    ratios["answer"] = stc["timings"]["answer_ms"] / base["timings"]["answer_ms"]
    summary["eval"] = {"ms_per_frame_off": off, "ms_per_frame_on": on, "on_over_off": ratios}
except Exception as error:  # noqa: BLE001
    summary["eval"] = f"unreadable: {error}"
for stc in ("stc", "no-stc"):  # stc stream's summary events
    try:
        summary[f"stream_{stc}"] = json.loads((out / f"stream-{stc}.json").read_text())
    except Exception as error:  # noqa: BLE001
        summary[f"stream_{stc}"] = f"unreadable: {error}"
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary))
PYTHON
step done
