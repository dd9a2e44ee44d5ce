import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from stc_cli import __version__
from stc_cli.cli import app

runner = CliRunner()
TINY_BENCH = [
    "bench",
    "--vision",
    "tiny",
    "--llm",
    "tiny",
    "--tokens-per-frame",
    "2",
    "--frames",
    "2",
    "--warmup",
    "1",
    "--repeats",
    "1",
]


def test_version_and_help():
    assert runner.invoke(app, ["--version"]).output == f"stc {__version__}\n"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "bench" in result.output


def test_start_up_does_not_import_torch():
    code = "import sys, stc_cli.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_bench_json_on_tiny_presets():
    result = runner.invoke(app, [*TINY_BENCH, "--state-frames", "120", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["vit"]["tokens_per_frame"] == 16 and report["vit"]["layers"] == 2  # CPU default depth
    assert report["prefill"]["full_tokens"] == 4 and report["prefill"]["kept_tokens"] == 2
    prefill = report["prefill"]
    assert prefill["rekv_ratio"] == prefill["rekv_pruned_ms_per_frame"] / prefill["rekv_full_ms_per_frame"]
    assert report["vit"]["ratio"] == report["vit"]["stc_ms_per_frame"] / report["vit"]["full_ms_per_frame"]
    assert report["vit"]["cacher_state_bytes"] == 2 * 4 * 16 * 32 * 4  # layers x K,V,A,M x [16, 32] float32
    assert report["state"] == {
        "chunks": [100, 120],
        "pruner_bytes": [64 * 32 * 4] * 2,  # a 64-chunk window of means over 32 of 64 channels
        "tiny_cacher_bytes": [3 * 4 * 16 * 32 * 4] * 2,
        "process_peak_rss_mb": report["state"]["process_peak_rss_mb"],
    }
    assert report["environment"]["device"].startswith("cpu")


def test_bench_json_and_table_on_the_tiny_qwen2vl_preset():
    argv = [*TINY_BENCH, "--vision", "qwen2vl-tiny", "--state-frames", "110"]
    result = runner.invoke(app, [*argv, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    vit, prefill = report["vit"], report["prefill"]
    assert (vit["preset"], vit["layers"], vit["tokens_per_frame"]) == ("qwen2vl-tiny", 2, 24)  # 4 x 6 patches
    assert vit["frames_per_chunk"] == 2 and vit["grid_thw"] == [1, 4, 6]
    assert vit["ratio"] == vit["stc_ms_per_frame"] / vit["full_ms_per_frame"]
    # Per block: qkv output [24, 96] (K and V views of it), A and M [24, 32]; the shared cos table [24, 16].
    assert vit["cacher_state_bytes"] == (2 * 24 * (96 + 32 + 32) + 24 * 16) * 4
    assert prefill["full_tokens"] == 6 and prefill["kept_tokens"] == 2  # 2 x 3 merged tokens, k
    assert prefill["full_tokens_from"] == "patch merger"
    assert report["state"]["tiny_cacher_bytes"] == [vit["cacher_state_bytes"]] * 2
    table = runner.invoke(app, [*argv[:-1], "0"])
    assert table.exit_code == 0, table.output
    text = " ".join(table.stdout.split())  # the caption wraps
    for part in (
        "per chunk (2 frames)",
        "grid 1x4x6",
        "LLM tokens from the patch merger",
        "prefill ms (6 vs 2",
    ):
        assert part in text


def test_bench_table():
    result = runner.invoke(app, [*TINY_BENCH, "--state-frames", "0"])
    assert result.exit_code == 0, result.output
    for row in (
        "ViT ms",
        "pruner ms",
        "prefill ms (4 vs 2 tokens)",
        "through ReKV's memory",
        "cacher state bytes",
        "ViT launches per call",
        "pruner launches per call",
    ):
        assert row in result.stdout


def test_bench_bad_options_say_what_to_fix():
    cases = {
        ("--frames", "3"): "--frames must be an even number >= 2, got 3",
        ("--llm", "qwen9"): "unknown LLM preset 'qwen9'; choose one of: qwen2-7b, qwen2-0.5b, qwen3-8b, tiny",
        ("--dtype", "float8"): "--dtype must be auto, float32, float16 or bfloat16, got 'float8'",
        ("--update-ratio", "0"): "update_ratio must be in (0, 1], got 0.0",
        ("--device", "tpu9"): "--device must be auto, cpu, cuda or cuda:N, got 'tpu9'",
        (
            "--tokens-per-frame",
            "5",
        ): "--tokens-per-frame 5 is more than the 4 pooled tokens per frame of the tiny",
        (
            "--vision",
            "qwen2vl-7b",
        ): "--vision qwen2vl-7b merges into 3584 channels, but --llm tiny is 64 wide",
    }
    for flags, message in cases.items():
        argv = [*TINY_BENCH, *flags] if flags[0] != "--tokens-per-frame" else [*TINY_BENCH[:5], *flags]
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, flags
        assert message in result.stderr, (flags, result.stderr)


def bench_table_rows(report: dict) -> list[list[str]]:
    """The first four cells of each row of ``stc bench``'s table for ``report``, as printed."""
    from rich.console import Console

    from stc_cli.tables import bench_table

    console = Console(width=200, record=True)
    console.print(bench_table(report))
    return [[cell.strip() for cell in line.split("│")[1:5]] for line in console.export_text().splitlines()]


def test_bench_table_shows_cuda_peaks_per_stage():
    report = json.loads(runner.invoke(app, [*TINY_BENCH, "--state-frames", "0", "--json"]).stdout)
    report["peak_memory_mb"] = {
        "vit_full": 900.0,
        "vit_stc": 1000.0,
        "pruner": 1000.0,
        "prefill_full": 400.0,
        "prefill_pruned": 300.0,
    }
    rows = bench_table_rows(report)
    assert ["vit peak MiB", "900", "1000", "1.111"] in rows
    assert ["prefill peak MiB", "400", "300", "0.750"] in rows


def test_bench_table_shows_launches_per_call_and_the_steps_that_sync():
    report = json.loads(runner.invoke(app, [*TINY_BENCH, "--state-frames", "0", "--json"]).stdout)
    launches = report["launches"]
    assert launches["host_syncs"] == dict.fromkeys(launches["per_chunk"], 0)
    launches["per_chunk"] |= {"vit_full": 400.0, "vit_stc": 600.0, "pruner": 37.0}
    launches["per_chunk"] |= {"prefill_full": 100.0, "prefill_pruned": 100.0}
    rows = bench_table_rows(report)
    assert ["ViT launches per call", "400", "600", "1.500"] in rows
    assert ["prefill launches per call", "100", "100", "1.000"] in rows
    assert ["pruner launches per call", "", "37", ""] in rows
    assert ["host syncs", "", "none", ""] in rows
    launches["host_syncs"] |= {"vit_stc": 2, "rekv_full": 1}
    assert ["host syncs", "", "vit_stc 2, rekv_full 1", ""] in bench_table_rows(report)


def test_bench_off_a_terminal_prints_a_line_per_stage():
    result = runner.invoke(app, [*TINY_BENCH, "--state-frames", "0", "--decode-tokens", "0", "--json"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "stc bench: 2 stages to do"
    assert lines[1].startswith("stc bench: 1/2 stages (50%), ") and lines[1].endswith(
        "(pruner and LLM prefill)"
    )
    assert lines[2].startswith("stc bench: 2/2 stages (100%), ") and lines[2].endswith("(done)")


@pytest.mark.parametrize("command", ["eval", "bench", "download", "check", "score", "compare"])
def test_help_shows_real_metavars_and_uncut_text(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=80)
    assert result.exit_code == 0
    assert "<bool>" not in result.output and "<str>" not in result.output and "<int>" not in result.output
    assert "…" not in result.output  # nothing cut to fit the width
    if command == "eval":
        assert "--model-path ID|DIR" in result.output and "llava-hf/llava-" in result.output


def test_an_unknown_benchmark_exits_2_in_every_command(tmp_path):
    for argv in (
        ["eval", "--bench", "nosuch"],
        ["check", "--bench", "nosuch"],
        ["download", "nosuch", "--data-dir", str(tmp_path)],
        ["score", "--bench", "nosuch", str(tmp_path)],
    ):
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert result.stderr.strip().splitlines()[-1].startswith("error: unknown benchmark 'nosuch'"), argv


def test_model_options_come_in_the_command_s_place_for_them_as_eval_config_fields():
    """`stc eval` and `stc stream` take the model options through one decorator: in the place of the
    command's ``model_options`` parameter, with EvalConfig's defaults, handed over as its fields."""
    import dataclasses
    import inspect

    import typer

    from stc_cli.commands.model_options import with_model_options
    from stc_cli.configs import EvalConfig

    seen = {}

    @with_model_options
    def command(first: int, model_options: dict | None = None, last: int = 0) -> None:
        seen.update(model_options, first=first, last=last)

    names = list(inspect.signature(command).parameters)
    assert names[:3] == ["first", "model", "model_path"] and names[-2:] == ["dtype", "last"]
    assert "model_options" not in names and "compile_layers" in names
    cli = typer.Typer()
    cli.command()(command)
    result = runner.invoke(cli, ["1", "--compile", "--no-stc", "--model", "livecc"])
    assert result.exit_code == 0, result.output
    fields = {f.name for f in dataclasses.fields(EvalConfig)} - {"bench", "data_dir", "tasks", "limit"}
    fields -= {"schedule", "output", "pruner_memory", "encode_chunk", "overwrite", "max_consecutive_errors"}
    defaults = {field: getattr(EvalConfig(), field) for field in fields}
    assert seen == defaults | {"compile": True, "stc": False, "model": "livecc", "first": 1, "last": 0}
