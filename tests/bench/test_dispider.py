"""``stc bench --dispider N`` on the tiny presets: Dispider's ``random:tiny`` CLIP (16 patches + CLS, 4 mixed
tokens per frame, 1 kept at STC's 60 / 196) and the tiny LLM as the reaction model."""

import dataclasses

import pytest
import torch
from rich.console import Console

from stc_cli.bench import run_bench
from stc_cli.bench.dispider import _tower
from stc_cli.configs import BenchConfig
from stc_cli.models.dispider import SHARE
from stc_cli.models.dispider_load import RANDOM_PRESETS
from stc_cli.models.presets import LLM_PRESETS
from stc_cli.tables import bench_table
from tests.bench import TINY


@pytest.fixture(scope="module")
def report():
    return run_bench(dataclasses.replace(TINY, dispider=4, decode_tokens=0))


def test_dispider_rows_time_the_tower_and_the_reaction_prefill(report):
    dispider = report["dispider"]
    assert (dispider["frames"], dispider["preset"]) == (4, "random:tiny")
    assert dispider["vit_layers"] == 2  # cut to 2 on CPU
    assert (dispider["vit_tokens_per_frame"], dispider["interval"], dispider["update_ratio"]) == (17, 4, 0.25)
    assert (dispider["tokens_per_frame"], dispider["kept_tokens_per_frame"]) == (4, 1)
    # what reaches the reaction LLM per frame: the CLIP tokens (all, or the pruner's) and the memory slot
    assert dispider["reaction_tokens_full"] == 4 + dispider["memory_tokens_per_frame"]
    assert dispider["reaction_tokens_pruned"] == 1 + dispider["memory_tokens_per_frame"]
    assert (dispider["llm"], dispider["llm_layers"]) == ("tiny", 2)
    for side, ratio in (("vit", "vit_ratio"), ("prefill", "prefill_ratio")):  # on / off
        on = dispider[f"{side}_{'stc' if side == 'vit' else 'pruned'}_ms_per_frame"]
        assert dispider[ratio] == pytest.approx(on / dispider[f"{side}_full_ms_per_frame"])
    assert dispider["pruner_share_of_stc_vit"] == pytest.approx(
        dispider["pruner_ms_per_frame"] / dispider["vit_stc_ms_per_frame"]
    )


def test_dispider_rows_in_the_table(report):
    console = Console(width=250, record=True)
    console.print(bench_table(report))
    text = console.export_text()
    assert "Dispider ViT ms (random:tiny CLIP x2 layers, 17 tokens, interval 4, ratio 0.25, 4 frames)" in text
    assert "pruner ms (4 -> 1 tokens)" in text
    assert "reaction prefill ms (tiny x2, 5 vs 2 tokens)" in text


def test_the_full_rows_are_dispiders_random_full_widths():
    """CLIP-L/14 at 224 px: 256 patches + CLS, 64 mixed tokens, 20 kept; the default --llm is the reaction
    model of Dispider's random:full."""
    tower = _tower(RANDOM_PRESETS["full"][0], 1, 0, "cpu", torch.float32).config
    assert ((tower.image_size // tower.patch_size) ** 2 + 1, tower.hidden_size) == (257, 1024)
    assert round((tower.image_size // tower.patch_size // 2) ** 2 * SHARE) == 20
    assert RANDOM_PRESETS["full"][2] is LLM_PRESETS[BenchConfig().llm]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dispider": -1}, "--dispider takes 0 (skip) or more frames than --warmup (1), got -1"),
        ({"dispider": 1}, "--dispider takes 0 (skip) or more frames than --warmup (1), got 1"),
        (
            {"dispider": 4, "vision": "qwen2vl-tiny"},
            "--dispider runs beside a SigLIP preset, not --vision qwen2vl-tiny",
        ),
    ],
)
def test_bad_dispider_options_raise_one_line(change, message):
    with pytest.raises(ValueError) as error:
        run_bench(dataclasses.replace(TINY, **change))
    assert str(error.value) == message
