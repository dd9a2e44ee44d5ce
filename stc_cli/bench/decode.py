"""The decoding stage (``--decode-tokens``): greedy tokens after a prefill, plain and through ReKV's
memory, STC off vs on."""

from __future__ import annotations

from collections.abc import Callable

import torch

from stc_cli.bench.prefill import REKV_INIT_TOKENS, prefill_stream, prompt, rekv_model
from stc_cli.bench.timer import Timer
from stc_cli.configs import BenchConfig
from stc_cli.models.presets import seeded

QUESTION_TOKENS = 16  # the question prefilled before decoding
# The real LM heads' vocabularies: reading the head is part of every generated token's cost.
LM_HEAD_VOCAB = {"qwen2-7b": 152064, "qwen2-0.5b": 151936}


def decode_stage(config: BenchConfig, timer: Timer, llm, pooled: list, kept: list, memories) -> dict:
    """Greedy decoding after a prefill, STC off vs on: the contexts differ only in their visual tokens.
    Plain: ``[init ; frames ; question]`` in a KV cache (the first frames, one per timed chunk). Through
    ReKV's memory, as ``stc eval`` answers: the question retrieves ``topk`` blocks per layer, is prefilled
    on them, then tokens are generated on that answer cache; the memory is the long stream's when there
    is one, else those frames. Each repeat answers afresh; each step is one argmax token fed back."""
    head = _lm_head(config, llm)
    init, question = prompt(llm, 0, REKV_INIT_TOKENS), prompt(llm, REKV_INIT_TOKENS, QUESTION_TOKENS)
    frames = {"full": pooled, "pruned": kept}
    if memories is None:
        with torch.inference_mode():
            memories = {side: _encoded(llm, chunks, config) for side, chunks in frames.items()}
    for rekv in memories.values():
        rekv.lm_head = head
    context: dict[str, int] = {}

    def steps():
        out = {}
        for side, chunks in frames.items():
            full_prompt = torch.cat([init, *chunks, question], dim=1)
            capacity = (
                full_prompt.shape[1] + config.warmup + config.decode_tokens if config.llm_graphs else None
            )
            out[f"decode_{side}"] = _plain_decoder(llm, head, full_prompt, capacity)
            context[side] = full_prompt.shape[1]
        for side, rekv in memories.items():
            rekv.retrieve(question, room=QUESTION_TOKENS + config.warmup + config.decode_tokens)
            out[f"rekv_decode_{side}"] = _greedy(llm, rekv.extend, rekv.extend(question))
            context[f"rekv_{side}"] = rekv.memory[0].answer_k.shape[1]  # init, chosen blocks, question
        return out

    ms = timer.compare(steps, chunks=config.warmup + config.decode_tokens)
    for rekv in memories.values():
        rekv.end_answer()
    block = {"tokens": config.decode_tokens, "question_tokens": QUESTION_TOKENS, "vocab": head.out_features}
    for prefix in ("", "rekv_"):
        block |= {
            f"{prefix}full_context_tokens": context[f"{prefix}full"],
            f"{prefix}pruned_context_tokens": context[f"{prefix}pruned"],
            f"{prefix}full_ms_per_token": ms[f"{prefix}decode_full"],
            f"{prefix}pruned_ms_per_token": ms[f"{prefix}decode_pruned"],
            f"{prefix}ratio": ms[f"{prefix}decode_pruned"] / ms[f"{prefix}decode_full"],
        }
    block["rekv_memory"] = "long stream" if config.long_stream else "prefill rows' frames"
    return block


def _encoded(llm, frames: list[torch.Tensor], config: BenchConfig):
    """A ReKV memory with ``frames`` streamed into it."""
    rekv = rekv_model(llm, frames[0].shape[1], config.n_local, config.llm_graphs)
    for frame in frames:
        rekv.encode(frame)
    return rekv


def _lm_head(config: BenchConfig, llm) -> torch.nn.Linear:
    """A random LM head at the real vocabulary size (``llm``'s own, small, for the tiny preset)."""
    vocab = LM_HEAD_VOCAB.get(config.llm, llm.config.vocab_size)
    with seeded(config.seed + 1, llm.device):
        head = torch.nn.Linear(llm.config.hidden_size, vocab, bias=False)
    return head.to(llm.dtype).eval()


def _plain_decoder(llm, head, prompt: torch.Tensor, capacity: int | None = None) -> Callable[[int], None]:
    """Prefill ``prompt`` into a fresh KV cache; the step generates one token on it. Given a ``capacity``
    (``--llm-graphs``), the cache is a static one of that many tokens, and each token's decoder pass is
    replayed from a CUDA graph (the LM head after it)."""
    hidden = prefill_stream(llm, capacity)

    def forward(embeds: torch.Tensor) -> torch.Tensor:
        return head(hidden(embeds)[0, -1])

    return _greedy(llm, forward, forward(prompt))


def _greedy(llm, forward: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor) -> Callable:
    """A step that generates one token: the argmax of the latest logits, embedded and fed to ``forward``
    (the logits of the next one). No sampling, and the token stays on the device (no host sync). Ids
    past the small random embedding table wrap: a lookup costs the same whichever row it reads.
    ``step.tokens`` collects the tokens fed back."""
    state, tokens = {"logits": logits}, []

    def step(_i: int) -> None:
        token = state["logits"].argmax(-1).reshape(1, 1) % llm.config.vocab_size
        tokens.append(token)
        state["logits"] = forward(llm.embed_tokens(token))

    step.tokens = tokens
    return step
