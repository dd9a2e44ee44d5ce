"""scripts/train_demo_model.py: a few steps write a checkpoint that ``--model-path`` loads, the same bytes
for the same seed."""

import importlib.util
import sys
from pathlib import Path

from stc_cli.models import llava_ov

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_demo_model.py"


def trainer():
    spec = importlib.util.spec_from_file_location("train_demo_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
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
