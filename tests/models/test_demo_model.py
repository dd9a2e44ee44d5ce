"""The demo model shipped with stc (``--model-path demo``, ``scripts/train_demo_model.py``): it loads by
name, it is the default on the demo and only there, and it answers the demo far above chance with STC on,
so that a compression path that stops the frames' content from reaching the LLM fails here. (Which tokens
the pruner keeps, or their order, does not move this model's answers: its vision tower spreads the
square's colour over every token; see docs/benchmarks.md.)"""

import json

from typer.testing import CliRunner

from stc_cli.cli import app
from stc_cli.configs import EvalConfig
from stc_cli.datasets.hub import DEMO_MODEL
from stc_cli.evaluation.evaluate import plan
from stc_cli.models import llava_ov
from stc_cli.scoring import score_results
from tests.ovo_fixture import write_ovo

SUBSET = 32  # the first 32 demo questions (clips 0 to 7): about 10 s on 2 CPU cores
CHANCE = 25.0  # four options, letters balanced


def test_the_demo_model_ships_in_the_package_and_loads_by_name():
    size = sum(path.stat().st_size for path in DEMO_MODEL.iterdir())
    assert size < 20e6
    llava = llava_ov.load("demo")
    assert llava.source == "demo" and llava.tokens_per_frame == 16
    assert llava.model.config.text_config.num_hidden_layers == 3


def test_with_stc_on_the_demo_model_stays_far_above_chance(tmp_path):
    result = CliRunner().invoke(
        app, ["eval", "--bench", "demo", "--limit", str(SUBSET), "--output", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "run.json").read_text())["settings"]
    assert settings["model"]["model_path"] == "demo" and settings["model"]["stc"]["pruner"]
    report = score_results(tmp_path)
    # Measured on the dev CPU: 19 of 32 right with STC on, 18 with it off, 11 when the pruner hands the LLM
    # zeroed tokens (what the model guesses from the questions alone). At least 16, twice chance, passes.
    assert report.n_total == SUBSET and report.overall >= 2 * CHANCE, report.overall


def test_the_demo_model_elsewhere_is_named_as_knowing_only_the_demo(tmp_path):
    write_ovo(tmp_path)
    notes = plan(EvalConfig(bench="ovo", model_path="demo", data_dir=str(tmp_path))).notes
    assert "--model-path demo knows only the demo's questions: its answers on ovo mean nothing" in notes
    assert not any("demo" in note for note in plan(EvalConfig(bench="ovo", data_dir=str(tmp_path))).notes)


def test_livecc_refuses_the_demo_model_in_one_line(tmp_path):
    result = CliRunner().invoke(
        app,
        ["eval", "--bench", "demo", "--model", "livecc", "--model-path", "demo", "--output", str(tmp_path)],
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "a LLaVA-OneVision checkpoint" in line and "run this one with --model rekv" in line
