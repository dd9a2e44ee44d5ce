"""scripts/train_demo_model.py: a few steps write a checkpoint that ``--model-path`` loads, the same bytes
for the same seed; what it tells the probe each token shows; its salient subsets."""

import importlib.util
import random
import sys
from pathlib import Path

import pytest
import torch

from stc_cli.models import llava_ov

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_demo_model.py"


def trainer():
    spec = importlib.util.spec_from_file_location("train_demo_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while they are made
    spec.loader.exec_module(module)
    return module


def train(out: Path) -> None:
    argv = sys.argv
    sys.argv = ["train_demo_model.py", "--out", str(out), "--clips", "3", "--steps", "2", "--batch", "2"]
    try:
        trainer().main()
    finally:
        sys.argv = argv


def test_a_short_run_writes_a_loadable_checkpoint_deterministically(tmp_path):
    train(tmp_path / "a")
    train(tmp_path / "b")
    weights = [(tmp_path / run / "model.safetensors").read_bytes() for run in "ab"]
    assert weights[0] == weights[1]
    llava = llava_ov.load(str(tmp_path / "a"))
    assert llava.tokens_per_frame == 16 and llava.model.config.text_config.hidden_size == 96


def test_training_never_uses_the_shipped_demo_s_clips():
    from stc_cli.benchmarks import demo_scenes

    assert trainer().FIRST_TRAINING_SEED > max(demo_scenes.DEMO_SEEDS)


def test_what_each_token_shows_follows_from_the_footprints():
    from stc_cli.benchmarks.demo_scenes import STILL, Scene

    # The square's 20 px from the corner: token (0, 0)'s footprint is patches 0-1, [0, 128/7) px, all
    # covered; token (0, 1)'s is [128/7, 256/7), of which 20 - 128/7 = 12/7 px are: 12/128 of it.
    scene = Scene(duration=1, colors=("red", "blue"), xs=(0, 0), y=0, direction=STILL)
    shown = trainer().tokens_of(scene, (0.0, 0.5))
    coverage = shown.coverage[0].view(4, 4).tolist()  # float32: 64 / 7 px is not exact
    expected = [[1.0, 12 / 128, 0, 0], [12 / 128, (12 / 128) ** 2, 0, 0], [0] * 4, [0] * 4]
    assert coverage == [pytest.approx(row, abs=1e-6) for row in expected]
    # Grown by NEAR = 4 px, the square ends at 24 px: inside the second footprint, short of the third
    # (from 3 * 64/7 = 27.4 px). Far from it: all but the 2 x 2 corner.
    near = ~shown.far[0].view(4, 4)
    assert near[:2, :2].all() and near.sum() == 4
    assert shown.colour.tolist() == [0, 2]  # red, then blue: COLORS order


def test_a_salient_subset_takes_the_square_s_tokens_first():
    module = trainer()
    examples = object.__new__(module.Examples)
    examples.rng, examples.drop, examples.salient = random.Random(0), 1.0, 1.0  # always thin, salient
    features = torch.arange(16.0).view(1, 16, 1).repeat(3, 1, 1)
    coverage = torch.zeros(3, 16)
    coverage[:, [1, 2, 5, 6]] = 0.5
    touched = {1, 2, 5, 6}
    sizes = set()
    for _ in range(20):
        kept = examples.thin(features, coverage)[..., 0]
        sizes.add(kept.shape[1])
        for row in kept.tolist():  # each frame: in raster order, the square's tokens before any other
            assert row == sorted(row) and len(row) >= 2
            assert set(row) <= touched if len(row) <= 4 else set(row) >= touched
    assert min(sizes) <= 4 < max(sizes)  # both cases were drawn
