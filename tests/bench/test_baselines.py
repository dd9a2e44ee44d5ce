"""``stc bench --compress``: the baselines timed beside STC on the same frames at its budget."""

import dataclasses

import pytest
from rich.console import Console

from stc_cli import tables
from stc_cli.bench import run_bench
from stc_cli.compress import ToMe
from tests.bench import TINY


def test_every_baseline_is_timed_at_stc_s_budget_and_tabled():
    result = run_bench(dataclasses.replace(TINY, compress=("tome", "vidcom2", "visionzip", "dtd")))
    vit, baselines = result["vit"], result["baselines"]
    # the tiny tower: 16 patches, 2 layers (the CPU default), 2 of 4 pooled tokens kept -> 8 patches left
    assert vit["tome_r"] == ToMe.schedule(16, 2, 8) == [4, 4] and vit["tome_tokens_left"] == 8
    assert vit["tome_ratio"] == pytest.approx(vit["tome_ms_per_frame"] / vit["full_ms_per_frame"])
    assert set(baselines) == {"stc", "vidcom2", "visionzip", "dtd"}
    # every method keeps exactly the budget in the timed frames (DTD's whole first frame is a warm-up one)
    assert {name: b["kept_tokens"] for name, b in baselines.items()} == dict.fromkeys(baselines, 2)
    assert all(b["ms_per_frame"] > 0 for b in baselines.values())
    text = _render(tables.baselines_table(result))
    for name in ("none", "stc", "tome", "vidcom2", "visionzip", "dtd"):
        assert f"\n│ {name} " in text or f"\n┃ {name} " in text
    assert "tome leaves 8 of 16 ViT tokens" in text


def test_without_compress_there_is_no_baselines_table():
    assert tables.baselines_table(run_bench(TINY)) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"compress": ("tome", "fastv")}, "--compress takes tome, vidcom2, visionzip, dtd; got fastv"),
        (
            {"compress": ("dtd",), "vision": "qwen2vl-tiny", "llm": "qwen2vl-tiny"},
            "not --vision qwen2vl-tiny",
        ),
        (
            {"compress": ("tome",), "layers": 1, "tokens_per_frame": 1},
            "tome with 1 ViT layers: cannot keep 4 of 16",
        ),
    ],
)
def test_bad_compress_options_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        run_bench(dataclasses.replace(TINY, **change))


def _render(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_streamforest_rows_stream_the_memory_full_and_pruned():
    """The tiny tower's 16 tokens per frame, 5 kept (STC's share); the memory's sizes scaled to 16."""
    forest = run_bench(dataclasses.replace(TINY, streamforest=30))["streamforest"]
    assert (forest["frames"], forest["tokens_per_frame"], forest["kept_tokens_per_frame"]) == (30, 16, 5)
    # the newest frame is held whole (16 vs 5 tokens), the short window at 3 tokens a frame on both sides
    assert forest["memory_tokens_full"] - forest["memory_tokens_pruned"] >= 16 - 5
    assert forest["prefill_ratio"] == pytest.approx(forest["prefill_pruned_ms"] / forest["prefill_full_ms"])
    with pytest.raises(ValueError, match="--streamforest takes a frame count >= 0 on a SigLIP preset"):
        run_bench(dataclasses.replace(TINY, streamforest=-1))
