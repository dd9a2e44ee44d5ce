"""`stc bench`'s decoding row: greedy tokens with a KV cache, at the real LM head's vocabulary."""

import dataclasses

import pytest
import torch

from stc_cli.bench import decode as bench_decode
from stc_cli.bench import run_bench
from stc_cli.models.presets import random_language_model
from tests.bench import TINY


def test_decoding_row_without_long_stream_and_its_absence_at_0():
    decode = run_bench(dataclasses.replace(TINY, decode_tokens=2))["decode"]
    assert (decode["tokens"], decode["vocab"], decode["rekv_memory"]) == (2, 256, "prefill rows' frames")
    assert (decode["rekv_full_context_tokens"], decode["rekv_pruned_context_tokens"]) == (44, 38)
    for prefix in ("", "rekv_"):
        expected = decode[f"{prefix}pruned_ms_per_token"] / decode[f"{prefix}full_ms_per_token"]
        assert decode[f"{prefix}ratio"] == expected
    assert "decode" not in run_bench(dataclasses.replace(TINY, decode_tokens=0))


@pytest.mark.parametrize("capacity", [None, 7 + 5], ids=["growing cache", "static cache (--llm-graphs)"])
def test_greedy_decoder_with_a_kv_cache_matches_recomputing_the_whole_sequence(capacity):
    llm = random_language_model("tiny", seed=5)
    head = bench_decode._lm_head(TINY, llm)
    prompt = torch.randn(1, 7, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        step = bench_decode._plain_decoder(llm, head, prompt, capacity)
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
    assert bench_decode._lm_head(dataclasses.replace(TINY, llm="qwen2-7b"), llm).out_features == 152064
