"""The demo model shipped with stc (``--model-path demo``, ``scripts/train_demo_model.py``): it loads by
name, it is the default on the demo and only there, and it answers the demo far above chance with STC on.
Its visual tokens are local (each describes its own part of the frame), so its answers depend on which
tokens the compression keeps: a pruner that keeps the wrong tokens, or a cacher that recomputes the wrong
ones, fails here."""

import json

import torch
from typer.testing import CliRunner

from stc_cli.cli import app
from stc_cli.compress import STCCacher, STCPruner
from stc_cli.compress.prelnvit_cacher import select_lowest
from stc_cli.configs import EvalConfig
from stc_cli.datasets.hub import DEMO_MODEL
from stc_cli.evaluation.evaluate import plan
from stc_cli.models import llava_ov
from stc_cli.scoring import score_results
from tests.ovo_fixture import write_ovo

SUBSET = 32  # the first 32 demo questions (clips 0 to 7): about 10 s on 2 CPU cores


class LeastNovel(STCPruner):
    """STC-Pruner turned around: it keeps the ``k`` tokens it would drop first (all but its ``P - k``
    most novel), a pruner whose choice of tokens is broken."""

    def compress(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames, tokens, channels = features.shape
        k = self.tokens_per_frame
        self.tokens_per_frame = tokens - k
        try:
            _, novel = super().compress(features)
        finally:
            self.tokens_per_frame = k
        left = torch.ones(frames, tokens, dtype=torch.bool, device=features.device).scatter(1, novel, False)
        idx = left.nonzero()[:, 1].view(frames, k)
        return features.gather(1, idx.unsqueeze(-1).expand(-1, -1, channels)), idx


def accuracy(folder, *flags: str) -> float:
    """``stc eval --bench demo`` on the subset with the demo model, STC on unless ``flags`` say otherwise."""
    result = CliRunner().invoke(
        app, ["eval", "--bench", "demo", "--limit", str(SUBSET), "--output", str(folder), *flags]
    )
    assert result.exit_code == 0, result.output
    report = score_results(folder)
    assert report.n_total == SUBSET
    return report.overall


def test_the_demo_model_ships_in_the_package_and_loads_by_name():
    size = sum(path.stat().st_size for path in DEMO_MODEL.iterdir())
    assert size < 20e6
    llava = llava_ov.load("demo")
    assert llava.source == "demo" and llava.tokens_per_frame == 16
    assert llava.model.config.text_config.num_hidden_layers == 3


def test_with_stc_on_the_demo_model_stays_far_above_chance(tmp_path):
    on = accuracy(tmp_path)
    settings = json.loads((tmp_path / "run.json").read_text())["settings"]
    assert settings["model"]["model_path"] == "demo" and settings["model"]["stc"]["pruner"]
    # Measured on the dev CPU: 31 of 32 right with STC on, 31 with it off. At least 28 passes.
    assert on >= 28 / SUBSET * 100, on


def test_a_pruner_that_keeps_the_wrong_tokens_falls_to_near_chance(tmp_path, monkeypatch):
    monkeypatch.setattr("stc_cli.models.base.STCPruner", LeastNovel)  # STCSettings.stc_pruner
    # Measured: 7 of 32 (the questions alone, with zeroed tokens, give 17 of 64). At most 12 passes.
    assert accuracy(tmp_path) <= 12 / SUBSET * 100


def least_changed(cacher: STCCacher, key: torch.Tensor, key_ref: torch.Tensor) -> torch.Tensor:
    """STC-Cacher's choice turned around: it recomputes the tokens whose keys changed least."""
    return select_lowest(-key, key_ref, cacher._count(key.shape[1]))


def test_a_cacher_that_recomputes_the_wrong_tokens_loses_what_changed(tmp_path, monkeypatch):
    # A reference every 4 frames leaves up to 3 s for stale tokens to show: measured 31 of 32 right with
    # the cacher's own choice, 25 with the least changed tokens recomputed (at the default 2: 31 and 31).
    right = accuracy(tmp_path / "right", "--cache-interval", "4")
    monkeypatch.setattr(STCCacher, "_select", least_changed)
    wrong = accuracy(tmp_path / "wrong", "--cache-interval", "4")
    assert right >= 28 / SUBSET * 100 and wrong <= right - 4 / SUBSET * 100, (right, wrong)


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
