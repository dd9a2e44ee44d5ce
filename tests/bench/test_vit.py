"""`stc bench`'s chunked ViT row."""

import dataclasses

from rich.console import Console

from stc_cli.bench import run_bench
from stc_cli.bench import vit as bench_vit
from stc_cli.models.presets import random_vision_tower
from stc_cli.tables import bench_table
from tests.bench import INIT, QUESTION, TINY


def test_frames_per_chunk_batches_the_vit_and_reports_per_frame(monkeypatch):
    batches = []  # frames per call of either tower (the STC copy shares the stock tower's hooks)

    def counted_tower(*args, **kwargs):
        tower = random_vision_tower(*args, **kwargs)
        tower.register_forward_pre_hook(
            lambda _m, _a, kw: batches.append(kw["pixel_values"].shape[0]), with_kwargs=True
        )
        return tower

    monkeypatch.setattr(bench_vit, "random_vision_tower", counted_tower)
    report = run_bench(dataclasses.replace(TINY, frames_per_chunk=4))
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
