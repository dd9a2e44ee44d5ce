"""``scripts/gpu_check.sh``: on a machine without CUDA it says so in one line and exits 0."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "scripts" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the script runs the whole check")
def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check"
    ]
    assert not (tmp_path / "out").exists()


def test_summary_reads_every_bench_row(tmp_path):
    """The script's summary step (its embedded Python), over `stc bench` reports made here on tiny presets:
    the 16-frame run stands in with 4 frames per call."""
    import dataclasses
    import json

    from stc_cli.bench import run_bench
    from stc_cli.configs import BenchConfig

    tiny = BenchConfig(
        vision="tiny",
        llm="tiny",
        tokens_per_frame=2,
        frames=2,
        warmup=1,
        repeats=1,
        state_frames=0,
        device="cpu",
    )
    runs = {
        "bench.json": dataclasses.replace(tiny, long_stream=True, n_local=8, decode_tokens=1),
        "bench-16.json": dataclasses.replace(
            tiny, frames_per_chunk=4, long_stream=True, n_local=8, decode_tokens=0
        ),
    }
    for name, config in runs.items():
        (tmp_path / name).write_text(json.dumps(run_bench(config)))
    # the --cuda-graphs (and --compile) runs need CUDA: for the summary, their reports differ in the flags
    for per_call, name in ((1, "bench.json"), (16, "bench-16.json")):
        report = json.loads((tmp_path / name).read_text())
        report["vit"]["cuda_graphs"] = True
        (tmp_path / f"bench-graphs-{per_call}.json").write_text(json.dumps(report))
        report["vit"]["compiled"] = True
        (tmp_path / f"bench-compiled-{per_call}.json").write_text(json.dumps(report))
    report = json.loads((tmp_path / "bench.json").read_text())
    report["prefill"]["llm_graphs"] = True
    (tmp_path / "bench-llm-graphs.json").write_text(json.dumps(report))
    text = SCRIPT.read_text()
    code = text.split("<<'PYTHON' 2>&1 | tee -a \"$LOG\"\n", 1)[1].split("\nPYTHON\n", 1)[0]
    done = subprocess.run([sys.executable, "-", str(tmp_path)], input=code, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["launches"] == json.loads((tmp_path / "bench.json").read_text())["launches"]
    bench = summary["bench"]
    assert sorted(bench) == [
        "decode_graphs_ms_per_token",
        "decode_ms_per_token",
        "frame",
        "frame_4_frames_per_call",
        "frame_graphs",
        "prefill",
        "prefill_4_frames_per_call",
        "prefill_graphs",
        "rekv_decode_ms_per_token",
        "rekv_graphs_decode_ms_per_token",
        "rekv_graphs_prefill",
        "rekv_graphs_prefill_window_full",
        "rekv_prefill",
        "rekv_prefill_4_frames_per_call",
        "rekv_prefill_window_full",
        "rekv_prefill_window_full_4_frames_per_call",
        "vit_1_frames_per_call",
        "vit_1_frames_per_call_compiled_graphs",
        "vit_1_frames_per_call_graphs",
        "vit_4_frames_per_call",
        "vit_4_frames_per_call_compiled_graphs",
        "vit_4_frames_per_call_graphs",
    ]
    for row in bench.values():
        assert row["ratio"] == row["on"] / row["off"]
