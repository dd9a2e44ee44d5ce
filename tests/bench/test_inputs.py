"""`stc bench`'s inputs: Qwen-VL chunks of whole temporal patches, fed to the LLM patch by patch."""

import dataclasses

import pytest
import torch

from stc_cli.bench import run_bench
from stc_cli.bench.inputs import vision_chunks
from stc_cli.models.presets import random_vision_tower
from tests.bench import INIT, QUESTION, TINY


def test_qwen2vl_chunk_of_4_frames_packs_two_temporal_patches_as_two_calls_would():
    one_patch = vision_chunks("qwen2vl-tiny", 4, seed=3)
    two_patches = vision_chunks("qwen2vl-tiny", 2, seed=3, frames=4)
    assert two_patches[0]["grid_thw"].tolist() == [[2, 4, 6]]
    for pair, (first, second) in zip(two_patches, (one_patch[:2], one_patch[2:]), strict=True):
        assert torch.equal(
            pair["hidden_states"], torch.cat((first["hidden_states"], second["hidden_states"]))
        )
    tower = random_vision_tower("qwen2vl-tiny")
    with torch.inference_mode():
        merged = tower(**two_patches[0]).pooler_output  # [2 x 6 merged tokens, 64]
        apart = [tower(**chunk).pooler_output for chunk in one_patch[:2]]
    torch.testing.assert_close(merged, torch.cat(apart))


def test_qwen2vl_frames_per_chunk_4_feeds_the_llm_two_temporal_patches_per_call():
    config = dataclasses.replace(TINY, vision="qwen2vl-tiny", frames_per_chunk=4, decode_tokens=1)
    report = run_bench(config)
    assert (report["vit"]["frames_per_chunk"], report["vit"]["grid_thw"]) == (4, [2, 4, 6])
    assert report["vit"]["timed_frames"] == 8
    prefill, frame = report["prefill"], report["frame"]
    assert prefill["frames_per_call"] == 2  # temporal patches: the chunk's, as the ViT's
    # Per frame end to end, LiveCC's way: the prefill into a KV cache, each patch's rows half per frame.
    assert frame["prefill"] == "KV cache"
    off = report["vit"]["full_ms_per_frame"] + prefill["full_ms_per_frame"] / 2
    on = (
        report["vit"]["stc_ms_per_frame"]
        + (report["pruner"]["ms_per_frame"] + prefill["pruned_ms_per_frame"]) / 2
    )
    assert (frame["full_ms"], frame["stc_ms"]) == (
        pytest.approx(off, rel=1e-12),
        pytest.approx(on, rel=1e-12),
    )
    assert report["decode"]["full_context_tokens"] == INIT + 3 * 6 + QUESTION  # 3 patches of 6 merged tokens


@pytest.mark.parametrize("vision", ["qwen25vl-tiny", "qwen3vl-tiny"])
def test_qwen25vl_and_qwen3vl_towers_run_every_row_with_the_cacher(vision):
    """Both tiny towers take 56 x 84 / 64 x 96 frame pairs: a 4 x 6 grid, 24 patches merged to 6 tokens
    that go to the LLM as they are; their tiny cacher of the same family holds its references."""
    result = run_bench(dataclasses.replace(TINY, vision=vision, state_frames=20))
    vit, prefill = result["vit"], result["prefill"]
    assert (vit["tokens_per_frame"], vit["grid_thw"], prefill["full_tokens"]) == (24, [1, 4, 6], 6)
    assert prefill["full_tokens_from"] == "patch merger" and vit["cacher_state_bytes"] > 0
    assert result["state"]["tiny_cacher_bytes"][0] == result["state"]["tiny_cacher_bytes"][1] > 0


def test_a_qwen3vl_tower_needs_an_llm_of_its_merged_width():
    with pytest.raises(ValueError, match="merges into 4096 channels, but --llm qwen2-7b is 3584 wide"):
        run_bench(dataclasses.replace(TINY, vision="qwen3vl-8b", llm="qwen2-7b"))
