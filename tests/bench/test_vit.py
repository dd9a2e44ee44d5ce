"""`stc bench`'s chunked ViT row."""

import dataclasses

from rich.console import Console

from stc_cli.bench import run as bench_run
from stc_cli.bench import run_bench
from stc_cli.bench import vit as bench_vit
from stc_cli.models.presets import random_language_model, random_vision_tower
from stc_cli.tables import bench_table
from tests.bench import INIT, QUESTION, TINY


def test_frames_per_chunk_batches_the_vit_pruner_and_prefill_and_reports_per_frame(monkeypatch):
    batches = []  # frames per call of either tower (the STC copy shares the stock tower's hooks)
    lengths = []  # tokens per call of the LLM's layers, every row's

    def counted_tower(*args, **kwargs):
        tower = random_vision_tower(*args, **kwargs)
        tower.register_forward_pre_hook(
            lambda _m, _a, kw: batches.append(kw["pixel_values"].shape[0]), with_kwargs=True
        )
        return tower

    def counted_llm(*args, **kwargs):
        llm = random_language_model(*args, **kwargs)
        llm.layers[0].input_layernorm.register_forward_pre_hook(lambda _m, a: lengths.append(a[0].shape[1]))
        return llm

    monkeypatch.setattr(bench_vit, "random_vision_tower", counted_tower)
    monkeypatch.setattr(bench_run, "random_language_model", counted_llm)
    report = run_bench(dataclasses.replace(TINY, frames_per_chunk=4))
    vit, prefill = report["vit"], report["prefill"]
    assert batches == [4] * 2 * 3  # stock and STC, 1 warm-up + 2 timed chunks
    assert (vit["frames_per_chunk"], vit["timed_frames"]) == (4, 8)
    assert vit["full_ms_per_frame"] == vit["full_ms_per_chunk"] / 4
    assert vit["ratio"] == vit["stc_ms_per_frame"] / vit["full_ms_per_frame"]
    # The pruner and prefill take a chunk per call, as `stc eval --encode-chunk 4`: the prefill rows'
    # 3 x 2 calls of the pruned side are the only calls of 4 x 2 tokens (a pruned frame alone is 2).
    assert prefill["frames_per_call"] == 4
    assert lengths.count(4 * 2) == 3 * 2
    assert report["frame"]["full_ms"] == vit["full_ms_per_frame"] + prefill["rekv_full_ms_per_frame"]
    # Decoding answers after one frame per chunk, whatever its size: [init ; 3 frames ; question].
    assert report["decode"]["full_context_tokens"] == INIT + 3 * 4 + QUESTION
    assert report["decode"]["pruned_context_tokens"] == INIT + 3 * 2 + QUESTION
    console = Console(width=200, record=True)
    console.print(bench_table(report))
    text = console.export_text()
    for row in (
        "ViT ms (4 frames per call)",
        "repeats of 2 calls of 4 frames",
        "prefill ms (4 vs 2 tokens, 4 frames per call)",
        "ViT + pruner + prefill ms (ReKV)",
        "decode ms / token, context 44 vs 38",
    ):
        assert row in text
