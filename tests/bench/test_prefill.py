"""`stc bench`'s long-stream row: prefill through ReKV's memory once its window is full."""

import dataclasses

import pytest

from stc_cli.bench import run_bench
from tests.bench import INIT, QUESTION, TINY


def test_long_stream_times_a_full_window_and_answers_from_it():
    report = run_bench(dataclasses.replace(TINY, long_stream=True, n_local=24, decode_tokens=3))
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
    # Per frame end to end (bar the video's decoding): ViT, pruner and prefill with the window full.
    vit, pruner, frame = report["vit"], report["pruner"], report["frame"]
    assert frame["prefill"] == "ReKV, window full"
    assert frame["full_ms"] == pytest.approx(vit["full_ms_per_frame"] + long["full_ms_per_frame"], rel=1e-12)
    on = vit["stc_ms_per_frame"] + pruner["ms_per_frame"] + long["pruned_ms_per_frame"]
    assert frame["stc_ms"] == pytest.approx(on, rel=1e-12)
    assert frame["ratio"] == frame["stc_ms"] / frame["full_ms"]
    # The timed frames continued the filled streams, and the answer retrieved from all their blocks.
    assert decode["rekv_memory"] == "long stream"
    assert decode["rekv_full_context_tokens"] == INIT + (6 + 3) * 4 + QUESTION
    assert decode["rekv_pruned_context_tokens"] == INIT + (12 + 3) * 2 + QUESTION


# On CUDA the same run with every side replayed from CUDA graphs (a chunk of 2 frames per graph).
GRAPHS = {"device": "cuda", "cuda_graphs": True, "llm_graphs": True}


@pytest.mark.parametrize("graphs", [{}, pytest.param(GRAPHS, marks=pytest.mark.gpu)], ids=["eager", "graphs"])
def test_long_stream_fills_and_continues_the_window_a_chunk_per_call(graphs):
    config = dataclasses.replace(
        TINY, long_stream=True, n_local=20, decode_tokens=3, frames_per_chunk=2, **graphs
    )
    report = run_bench(config)
    assert report["prefill"]["llm_graphs"] == bool(graphs)
    long, decode = report["long_stream"], report["decode"]
    # Calls of 2 frames: 8 tokens full (3 calls fill 20), 4 pruned (5 calls); one block per frame.
    keys = ("fill_frames", "window_tokens", "offloaded_blocks")
    sides = {side: tuple(long[f"{side}_{key}"] for key in keys) for side in ("full", "pruned")}
    assert sides == {"full": (6, 20, 6), "pruned": (10, 20, 10)}
    # Then 3 timed calls of 2 frames each, all retrieved by the answer.
    assert decode["rekv_full_context_tokens"] == INIT + (6 + 3 * 2) * 4 + QUESTION
    assert decode["rekv_pruned_context_tokens"] == INIT + (10 + 3 * 2) * 2 + QUESTION
