"""The interface every base system implements for the runner (``stc_cli/evaluation/runner.py``).

A model keeps the memory of one video: ``reset()`` empties it, ``add_frames`` appends frames to it
(encoding them, STC included), ``answer`` answers a query from it without changing it, so that the
queries of one video can be answered in time order on a growing memory (the stream schedule) or each
on a fresh memory of its own window (the clip schedule) with the same result.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import torch

from stc_cli.benchmarks.base import Query
from stc_cli.compress import STCCacher, STCPruner

PRUNER_BASELINES = ("vidcom2", "dtd", "visionzip")  # --compress methods that act where STC-Pruner does


@dataclass(frozen=True)
class STCSettings:
    """Which STC parts a model runs, and their knobs (``stc_cli/compress``)."""

    cacher: bool = True
    pruner: bool = True
    update_ratio: float = 0.25
    cache_interval: int = 2
    tokens_per_frame: int = 60  # of LLaVA-OV's 196, STC's default
    # "video": the pruner's temporal memory starts afresh with each video (a fix); "process": it is kept
    # for the whole run, as the released code does (its per-video reset rebinds an alias only), so that
    # scores depend on the order of the videos
    pruner_memory: str = "video"
    # the last N chunk means the pruner's temporal anchor averages (bounded state on long streams); None:
    # every chunk since its memory started, as released
    pruner_window: int | None = None
    pruner_method: str = "stc"  # or a baseline in the pruner's place (--compress): vidcom2, dtd, visionzip
    dtd_threshold: float | None = None  # --compress dtd: absolute mode; None: keep tokens_per_frame
    tome: bool = False  # --compress tome: ToMe in the vision tower instead of the cacher
    tome_r: int | None = None  # tokens ToMe merges per layer; None: the schedule to STC's budget

    @classmethod
    def from_config(
        cls, config, default_tokens_per_frame: int, *, default_interval: int = 2, default_ratio: float = 0.25
    ) -> STCSettings:
        """The STC part of an ``EvalConfig``; an unset ``--tokens-per-frame``, ``--cache-interval`` or
        ``--update-ratio`` means the model's default."""
        stc = config.stc and config.compress == "stc"
        baseline = config.compress in PRUNER_BASELINES  # in STC-Pruner's place, no cacher
        return cls(
            cacher=stc and config.cacher,
            pruner=(stc and config.pruner) or baseline,
            update_ratio=default_ratio if config.update_ratio is None else config.update_ratio,
            cache_interval=default_interval if config.cache_interval is None else config.cache_interval,
            tokens_per_frame=config.tokens_per_frame or default_tokens_per_frame,
            pruner_memory=config.pruner_memory,
            pruner_window=config.pruner_window,
            pruner_method=config.compress if baseline else "stc",
            dtd_threshold=config.dtd_threshold if config.compress == "dtd" else None,
            tome=config.compress == "tome",
            tome_r=config.tome_r if config.compress == "tome" else None,
        )

    def attach_cacher(self, vision: torch.nn.Module, *, compile: bool = False) -> STCCacher | None:
        """STC-Cacher at these settings attached to ``vision`` (its tower), or None with the cacher off."""
        if not self.cacher:
            return None
        return STCCacher(self.update_ratio, self.cache_interval, compile=compile).attach(vision)

    def stc_pruner(self, tokens_per_frame: int | None = None) -> STCPruner:
        """STC-Pruner at these settings, keeping ``tokens_per_frame`` (default: theirs) per frame."""
        return STCPruner(tokens_per_frame or self.tokens_per_frame, memory_window=self.pruner_window)


STC_DEFAULTS = STCSettings()


@dataclass
class Step:
    """What one call cost: per-stage wall times in ms (``vit``, ``compress``, ``prefill``, ``answer``)
    and counts (``visual_tokens_in``, ``visual_tokens_kept``, ``new_tokens``)."""

    timings_ms: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Answer(Step):
    """The response ``text``; ``model_input``: the text prefilled after the visual memory (special tokens
    included); ``retrieval_input``: the text that picked the frames, for a model that retrieves;
    ``frame_times``: the frames the memory held, where the model knows better than the frames it was given."""

    text: str = ""
    model_input: str = ""
    retrieval_input: str | None = None
    frame_times: tuple[float, ...] | None = None


class VideoModel(Protocol):
    # True where ``add_frames`` must get a clip's frames in one call (else the runner feeds them in
    # batches of a bounded size)
    takes_whole_clip: bool = False

    def reset(self) -> None:
        """Forget the current video (KV cache, STC cacher and pruner state)."""

    def add_frames(self, frames: torch.Tensor, times: tuple[float, ...]) -> Step:
        """Append ``frames`` (uint8 ``[N, H, W, 3]``, RGB) taken at ``times`` (seconds) to the memory."""

    def answer(self, query: Query) -> Answer:
        """Answer ``query`` from the memory, leaving the memory as it was."""

    def describe(self) -> dict:
        """The settings that move a score or a timing (checkpoint, dtype, STC knobs), for run.json."""


class ProactiveModel(VideoModel, Protocol):
    """A ``VideoModel`` that decides by itself when to answer a question posed before its time (Dispider's
    silent head). The runner runs its loop where ``proactive`` is True (its protocol asks for it; any other
    model lacks the attribute): for each forward query, after each frame added from the video's start to
    the query's time, it asks ``wants_to_answer`` and, on True, ``answer`` there and then."""

    proactive: bool

    def wants_to_answer(self, query: Query) -> bool:
        """Whether, with the frames added so far, the model answers ``query`` now; like ``answer``, it
        leaves the memory as it was, so that asking twice gives the same decision."""


@contextmanager
def timed(step: Step, stage: str, device: torch.device):
    """Add the wall time of the block to ``step.timings_ms[stage]``; waits for CUDA work on both ends so
    that the time is the stage's own."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    step.timings_ms[stage] = step.timings_ms.get(stage, 0.0) + (time.perf_counter() - started) * 1000


def clean_up_spaces(text: str) -> str:
    """transformers 4.x's ``clean_up_tokenization`` (what ``decode(..., clean_up_tokenization_spaces=True)``
    did to the released harnesses' answers; 5.x skips it for BPE tokenizers): no space before . ? ! , and
    English contractions."""
    for spaced, joined in (
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
        (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ):  # fmt: skip
        text = text.replace(spaced, joined)
    return text


def greedy(logits: torch.Tensor, max_new_tokens: int, stop_ids, next_logits, repetition_penalty=None):
    """Greedy decoding from the first token's ``logits``: up to ``max_new_tokens`` tokens, stopping at (and
    dropping) a token of ``stop_ids``; ``next_logits(token)`` appends a token and returns the next
    logits. ``repetition_penalty`` (transformers' rule) acts on the tokens generated so far."""
    tokens: list[int] = []
    while True:
        if repetition_penalty not in (None, 1.0) and tokens:
            seen = torch.tensor(sorted(set(tokens)), device=logits.device)
            scores = logits[seen]
            logits = logits.clone()
            logits[seen] = torch.where(scores < 0, scores * repetition_penalty, scores / repetition_penalty)
        token = int(logits.argmax())
        if token in stop_ids:
            break
        tokens.append(token)
        if len(tokens) == max_new_tokens:
            break
        logits = next_logits(token)
    return tokens


def prefill_cache(lm, embeds: torch.Tensor):
    """A fresh KV cache filled by a causal LM (``lm.model``, ``lm.config``) with ``embeds [1, L, D]``:
    ``(last hidden states [1, L, D], cache)``, for ``greedy_on_cache`` to go on from."""
    from transformers import DynamicCache

    cache = DynamicCache(config=lm.config)
    return lm.model(inputs_embeds=embeds, cache=cache, use_cache=True).last_hidden_state, cache


def greedy_on_cache(lm, hidden: torch.Tensor, cache, length: int, max_new_tokens: int, stop_ids, vocab=None):
    """``greedy`` on a causal LM (``lm.model``, ``lm.lm_head``) right after a prefill of ``length`` tokens
    into ``cache`` whose last hidden state is ``hidden``; each new token goes in at the next position.
    ``vocab``: only the first rows of the LM head are candidates (a head resized past the tokenizer)."""
    positions = iter(range(length, length + max_new_tokens))

    def next_logits(token: int) -> torch.Tensor:
        ids = torch.tensor([[token]], device=hidden.device)
        at = torch.tensor([[next(positions)]], device=hidden.device)
        out = lm.model(input_ids=ids, position_ids=at, cache=cache, use_cache=True)
        return lm.lm_head(out.last_hidden_state[0, -1])[:vocab]

    return greedy(lm.lm_head(hidden)[:vocab], max_new_tokens, stop_ids, next_logits)


def stop_ids(tokenizer, stop: str, generation_eos: int | list[int] | None = None) -> set[int]:
    """The tokens that end an answer under a protocol's ``stop``: the tokenizer's eos, and for
    ``eos+im_end`` also ``<|im_end|>`` and the checkpoint's own generation eos ids where given."""
    ids = {tokenizer.eos_token_id}
    if stop == "eos+im_end":
        extra = [generation_eos] if isinstance(generation_eos, int) else generation_eos or []
        ids |= {tokenizer.convert_tokens_to_ids("<|im_end|>"), *extra}
    return ids


def count(step: Step, name: str, value: int) -> None:
    step.counts[name] = step.counts.get(name, 0) + value
