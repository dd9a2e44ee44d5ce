"""`stc bench`'s chunked ViT, long-stream (ReKV window full) and decoding rows, on tiny presets on a CPU."""

import dataclasses

import pytest
import torch
from rich.console import Console

from stc_cli import bench
from stc_cli.configs import BenchConfig
from stc_cli.models.presets import random_language_model, random_vision_tower
from stc_cli.tables import bench_table

# 1 warm-up + 2 timed chunks, one repeat; the tiny LLM gets 4 pooled tokens per frame and keeps 2.
TINY = BenchConfig(
    vision="tiny", llm="tiny", tokens_per_frame=2, frames=2, warmup=1, repeats=1, state_frames=0, device="cpu"
)
INIT, QUESTION = bench.REKV_INIT_TOKENS, bench.QUESTION_TOKENS


def test_frames_per_chunk_batches_the_vit_and_reports_per_frame(monkeypatch):
    batches = []  # frames per call of either tower (the STC copy shares the stock tower's hooks)

    def counted_tower(*args, **kwargs):
        tower = random_vision_tower(*args, **kwargs)
        tower.register_forward_pre_hook(
            lambda _m, _a, kw: batches.append(kw["pixel_values"].shape[0]), with_kwargs=True
        )
        return tower

    monkeypatch.setattr(bench, "random_vision_tower", counted_tower)
    report = bench.run_bench(dataclasses.replace(TINY, frames_per_chunk=4))
    vit = report["vit"]
    assert batches == [4] * 2 * 3  # stock and STC, 1 warm-up + 2 timed chunks
    assert (vit["frames_per_chunk"], vit["timed_frames"]) == (4, 8)
    assert vit["full_ms_per_frame"] == vit["full_ms_per_chunk"] / 4
    assert vit["ratio"] == vit["stc_ms_per_frame"] / vit["full_ms_per_frame"]
    # The LLM rows still go frame by frame, as many frames as chunks: [init ; 3 frames ; question].
    assert report["decode"]["full_context_tokens"] == INIT + 3 * 4 + QUESTION
    assert report["decode"]["pruned_context_tokens"] == INIT + 3 * 2 + QUESTION
    console = Console(width=200, record=True)
    console.print(bench_table(report))
    text = console.export_text()
    for row in (
        "ViT ms (4 frames per call)",
        "(ViT: 2 calls of 4 frames)",
        "decode ms / token, context 44 vs 38",
    ):
        assert row in text


def test_qwen2vl_chunk_of_4_frames_packs_two_temporal_patches_as_two_calls_would():
    one_patch = bench.vision_chunks("qwen2vl-tiny", 4, seed=3)
    two_patches = bench.vision_chunks("qwen2vl-tiny", 2, seed=3, frames=4)
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


def test_qwen2vl_frames_per_chunk_4_feeds_the_llm_per_temporal_patch():
    config = dataclasses.replace(TINY, vision="qwen2vl-tiny", frames_per_chunk=4, decode_tokens=1)
    report = bench.run_bench(config)
    assert (report["vit"]["frames_per_chunk"], report["vit"]["grid_thw"]) == (4, [2, 4, 6])
    assert report["vit"]["timed_frames"] == 8
    assert report["decode"]["full_context_tokens"] == INIT + 3 * 6 + QUESTION  # 3 patches of 6 merged tokens


def test_long_stream_times_a_full_window_and_answers_from_it():
    report = bench.run_bench(dataclasses.replace(TINY, long_stream=True, n_local=24, decode_tokens=3))
    long, decode = report["long_stream"], report["decode"]
    assert long | {"full_ms_per_frame": 0, "pruned_ms_per_frame": 0, "ratio": 0} == {
        "n_local": 24,
        "full_tokens": 4,
        "kept_tokens": 2,
        "full_fill_frames": 6,  # 24 tokens / 4 per frame: the init prompt is out of the window
        "full_window_tokens": 24,
        "full_offloaded_blocks": 6,
        "pruned_fill_frames": 12,
        "pruned_window_tokens": 24,
        "pruned_offloaded_blocks": 12,
        "full_ms_per_frame": 0,
        "pruned_ms_per_frame": 0,
        "ratio": 0,
    }
    assert long["ratio"] == long["pruned_ms_per_frame"] / long["full_ms_per_frame"]
    # The timed frames continued the filled streams, and the answer retrieved from all their blocks.
    assert decode["rekv_memory"] == "long stream"
    assert decode["rekv_full_context_tokens"] == INIT + (6 + 3) * 4 + QUESTION
    assert decode["rekv_pruned_context_tokens"] == INIT + (12 + 3) * 2 + QUESTION


def test_decoding_row_without_long_stream_and_its_absence_at_0():
    decode = bench.run_bench(dataclasses.replace(TINY, decode_tokens=2))["decode"]
    assert (decode["tokens"], decode["vocab"], decode["rekv_memory"]) == (2, 256, "prefill rows' frames")
    assert (decode["rekv_full_context_tokens"], decode["rekv_pruned_context_tokens"]) == (44, 38)
    for prefix in ("", "rekv_"):
        expected = decode[f"{prefix}pruned_ms_per_token"] / decode[f"{prefix}full_ms_per_token"]
        assert decode[f"{prefix}ratio"] == expected
    assert "decode" not in bench.run_bench(dataclasses.replace(TINY, decode_tokens=0))


def test_greedy_decoder_with_a_kv_cache_matches_recomputing_the_whole_sequence():
    llm = random_language_model("tiny", seed=5)
    head = bench._lm_head(TINY, llm)
    prompt = torch.randn(1, 7, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        step = bench._plain_decoder(llm, head, prompt)
        for i in range(5):
            step(i)
        sequence, expected = prompt, []
        for _ in range(5):
            token = head(llm(inputs_embeds=sequence).last_hidden_state[0, -1]).argmax().reshape(1, 1)
            expected.append(token)
            sequence = torch.cat((sequence, llm.embed_tokens(token)), dim=1)
    assert torch.cat(step.tokens).tolist() == torch.cat(expected).tolist()


def test_lm_head_has_the_real_vocabulary():
    llm = random_language_model("tiny")
    assert bench._lm_head(dataclasses.replace(TINY, llm="qwen2-7b"), llm).out_features == 152064


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frames_per_chunk": 0}, "--frames-per-chunk must be >= 1, got 0"),
        (
            {"vision": "qwen2vl-tiny", "frames_per_chunk": 3},
            "--frames-per-chunk must be even for --vision qwen2vl-tiny (a chunk holds whole temporal patches "
            "of 2 frames), got 3",
        ),
        ({"n_local": 0}, "--n-local must be >= 1, got 0"),
        ({"decode_tokens": -1}, "--decode-tokens must be >= 0, got -1"),
    ],
)
def test_bad_new_options_raise_one_line_naming_the_flag(change, message):
    with pytest.raises(ValueError) as error:
        bench.run_bench(dataclasses.replace(TINY, **change))
    assert str(error.value) == message
