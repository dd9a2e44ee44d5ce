"""The streaming loop shared by the Qwen-VL family: LiveCC (Qwen2-VL), Qwen2.5-VL and Qwen3-VL.

A video streams in as 1-second chunks of two frames (one temporal patch), each appended as one segment
(a user turn holding the chunk's video tokens) on a KV cache carried across chunks. A question is one
more user turn, answered greedily (or, with ``option-logits`` decoding, by the option token with the
largest logit after "The answer is:\\n"); the cache is cut back afterwards, so answering leaves the
memory as it was. A frame still waiting for its partner is not visible to a question.

Every segment gets explicit 3-D M-RoPE positions (``get_rope_index`` on the segment, shifted past the
largest position so far): transformers 5.x alone would give later video segments 1-D positions. Qwen3-VL
adds deepstack features (from intermediate vision blocks) to the hidden states of the video tokens after
its first decoder layers; a segment passes its own, so the streamed cache equals one full pass. STC: the
cacher on every vision block, the pruner after the patch merger per temporal patch; kept tokens keep
their full-grid (t, h, w) positions and their deepstack rows, so the text after them sits where it would
have without pruning.

A subclass names its texts (``SYSTEM_PROMPT``, ``CHUNK_TURN``, ``QUESTION_TURN``), the protocol template
it runs (``TEMPLATE``) and its default protocol; ``livecc.py``, ``qwen25vl.py`` and ``qwen3vl.py`` are the
three.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import NamedTuple

import torch

from stc_cli.benchmarks.base import Query
from stc_cli.compress import DifferentialTokenDrop, STCPruner
from stc_cli.models.base import STC_DEFAULTS, Answer, STCSettings, Step, count, greedy, stop_ids, timed
from stc_cli.protocols import Protocol

QUESTION_TURN = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
LOGITS_PREFILL = "The answer is:\n"
CANDIDATES = ("No", "Yes", *"0123456789")  # LiveCC's OVO-Bench answers besides the option letters
TEXT, IMAGE, VIDEO = 0, 1, 2  # mm_token_type_ids


class Patch(NamedTuple):
    """One temporal patch after the vision tower and the pruner."""

    features: torch.Tensor  # [P, width], every merged token
    grid: torch.Tensor  # grid_thw [[1, gh, gw]]
    kept: torch.Tensor  # indices of the kept tokens, ascending (raster order of the merged grid)
    deepstack: list[torch.Tensor] | None  # Qwen3-VL: [P, width] per deepstack layer; else None


class QwenVLStream:
    """The ``VideoModel`` (``models/base.py``) of a Qwen-VL streamed on a KV cache. ``qwen`` holds the model,
    its tokenizer, its frame transform and its source (``qwen2vl.Qwen2VL``); ``settings`` has
    ``min_pixels``, ``max_pixels`` (each video is resized once, within them per temporal patch) and
    ``max_cache_tokens``."""

    NAME = ""  # describe()["model"]
    SETTINGS_KEY = ""  # describe()[SETTINGS_KEY] = the settings
    TEMPLATE = ""  # the protocol template this layout runs
    DECODINGS = ("greedy", "option-logits")
    SYSTEM_PROMPT = ""  # "" for none
    CHUNK_TURN = ""  # formatted with start, end, middle (seconds) and video (the placeholders)
    QUESTION_TURN = QUESTION_TURN
    takes_whole_clip = False

    def __init__(
        self, qwen, stc: STCSettings = STC_DEFAULTS, settings=None, protocol: Protocol | None = None
    ):
        settings = settings if settings is not None else self.default_settings()
        protocol = protocol or self.default_protocol()
        if protocol.template != self.TEMPLATE or protocol.decoding not in self.DECODINGS:
            raise ValueError(
                f"protocol {protocol.name} ({protocol.model}) does not fit {type(self).__name__}"
            )
        self.qwen, self.stc, self.settings, self.protocol = qwen, stc, settings, protocol
        self.model = qwen.model
        self.lm = self.model.model.language_model
        self.device = next(self.model.parameters()).device
        self.frames = replace(qwen.frames, min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
        self.cacher = stc.attach_cacher(self.model.model.visual)
        tokenizer = qwen.tokenizer
        self.video_pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
        self.stop_ids = stop_ids(tokenizer, protocol.stop)
        self.reset()

    @classmethod
    def default_settings(cls):
        raise NotImplementedError

    @classmethod
    def default_protocol(cls) -> Protocol:
        raise NotImplementedError

    def describe(self) -> dict:
        return {
            "model": self.NAME,
            "model_path": self.qwen.source,
            "dtype": str(self.lm.dtype).removeprefix("torch."),
            "stc": asdict(self.stc),
            self.SETTINGS_KEY: asdict(self.settings),
            "stop_ids": sorted(self.stop_ids),
        }

    @torch.inference_mode()
    def reset(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.lm.config)
        self.next_position = 0
        self.segments: list[int] = []  # cached tokens per appended segment, for eviction
        self.chunk_times: list[tuple[float, float]] = []  # the frames of each chunk segment (after the first)
        self.answering = False
        self.pending: list[tuple[torch.Tensor, float]] = []
        self.size: tuple[int, int] | None = None  # (H, W) of every frame of this video
        self.pruner: STCPruner | DifferentialTokenDrop | None = None  # made at the first chunk (grid known)
        if self.cacher:
            self.cacher.reset()
        if self.SYSTEM_PROMPT:
            self._append(self._token_ids(self.SYSTEM_PROMPT))
        else:
            self.segments.append(0)  # the system segment, empty: eviction never drops it

    @torch.inference_mode()
    def add_frames(self, frames: torch.Tensor, times: tuple[float, ...]) -> Step:
        step = Step()
        if self.size is None and len(frames):
            self.size = self.frames.size_for(frames.shape[1], frames.shape[2])
        self.pending += list(zip(frames, times, strict=True))
        while len(self.pending) >= 2:
            (first, start), (second, end) = self.pending[:2]
            self.pending = self.pending[2:]
            self._add_chunk(torch.stack((first, second)), start, end, step)
        return step

    def _add_chunk(self, pair: torch.Tensor, start: float, end: float, step: Step) -> None:
        patch = self._encode_patch(pair, self.size, step)
        with timed(step, "prefill", self.device):
            # the chunk covers its two frame intervals: at 2 fps, frames at 0.0 and 0.5 are "Time=0.0-1.0s"
            video = "<|video_pad|>" * patch.features.shape[0]
            text = self.CHUNK_TURN.format(
                start=start, end=2 * end - start, middle=(start + end) / 2, video=video
            )
            self.chunk_times.append((start, end))
            self._append(self._token_ids(text), patch.grid, patch.features, patch.kept, patch.deepstack)

    def _encode_patch(self, pair: torch.Tensor, size, step: Step) -> Patch:
        """One temporal patch (2 frames) through the vision tower (cacher inside) and the pruner."""
        with timed(step, "vit", self.device):
            pixels, grid = self.frames(pair, size, dtype=self.lm.dtype, device=self.device)
            features, deepstack = self._vision(pixels, grid)
        kept = torch.arange(features.shape[0], device=self.device)
        if self.stc.pruner:
            with timed(step, "compress", self.device):
                kept = self._prune(features)
        count(step, "frames_encoded", 2)
        count(step, "visual_tokens_in", features.shape[0])
        count(step, "visual_tokens_kept", len(kept))
        return Patch(features, grid, kept, deepstack)

    def _vision(self, pixels: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, list | None]:
        """The tower's merged tokens ``[P, width]`` and, for Qwen3-VL, its deepstack features."""
        out = self.model.model.visual(pixels, grid_thw=grid)
        deepstack = (
            getattr(out, "deepstack_features", None) if getattr(self.protocol, "deepstack", True) else None
        )
        return out.pooler_output, deepstack

    def _budget(self, tokens: int) -> int:
        """Merged tokens the pruner keeps of a temporal patch of ``tokens``."""
        return min(self.stc.tokens_per_frame, tokens)

    def _prune(self, features: torch.Tensor) -> torch.Tensor:
        """Indices of the merged tokens the pruner keeps, ascending (raster order of the merged grid).
        ``--compress dtd`` puts TimeChat-Online's differential token drop there, against the previous
        temporal patch; the kept tokens keep their positions as STC-Pruner's do."""
        if self.pruner is None:
            self.pruner = make_pruner(self.stc, self._budget(features.shape[0]))
        return prune(self.pruner, features)

    @torch.inference_mode()
    def answer(self, query: Query) -> Answer:
        answer = Answer(model_input=self.question_text(query))
        saved = (self.cache.get_seq_length(), self.next_position, list(self.segments))
        self.answering = True  # no eviction: the question and answer are cut back afterwards
        try:
            with timed(answer, "answer", self.device):
                hidden = self._append(self._token_ids(answer.model_input))
                logits = self.model.lm_head(hidden[0, -1]).float()
                if self.protocol.decoding == "greedy":
                    answer.text = self._generate(logits, answer)
                else:
                    answer.text = self._best_candidate(logits, query)
        finally:
            length, self.next_position, self.segments = saved
            truncate(self.cache, length)
            self.answering = False
        answer.frame_times = tuple(t for chunk in self.chunk_times for t in chunk)
        return answer

    def question_text(self, query: Query) -> str:
        """The question turn; "The answer is:\\n" opens the reply when the answer is read from logits."""
        prefill = "" if self.protocol.decoding == "greedy" else LOGITS_PREFILL
        return self.QUESTION_TURN.format(prompt=query.prompt) + prefill

    def _best_candidate(self, logits: torch.Tensor, query: Query) -> str:
        """``option-logits``: the option letter (else No, Yes or a digit) whose first token scores best."""
        names = [chr(ord("A") + i) for i in range(len(query.options))] if query.options else list(CANDIDATES)
        first = [self._ids(name)[0, 0].item() for name in names]
        return names[int(torch.argmax(logits[first]))]

    def _generate(self, logits: torch.Tensor, answer: Answer) -> str:
        tokens = greedy(logits, self.protocol.max_new_tokens, self.stop_ids, self._next_logits)
        count(answer, "new_tokens", len(tokens))
        return self.qwen.tokenizer.decode(tokens, skip_special_tokens=True)

    def _next_logits(self, token: int) -> torch.Tensor:
        return self.model.lm_head(self._append([token])[0, -1]).float()

    # -- the LLM -----------------------------------------------------------------------------------
    def _ids(self, text: str) -> torch.Tensor:
        return torch.tensor([self._token_ids(text)], device=self.device)

    def _token_ids(self, text: str) -> list[int]:
        return self.qwen.tokenizer(text, add_special_tokens=False).input_ids

    def _append(self, ids: list[int], grid=None, features=None, kept=None, deepstack=None) -> torch.Tensor:
        """Run segment ``ids`` on the cache at explicit M-RoPE positions after everything so far; its one
        run of video placeholders takes ``features`` (only the ``kept`` rows, ascending, enter the cache,
        with their ``deepstack`` rows where the model has them). Returns the segment's last hidden states
        ``[1, L', width]``. Where the placeholders are is known on the host, so that nothing here but the
        positions' end waits for the device (and transformers' ``get_rope_index``)."""
        tokens = torch.tensor([ids], device=self.device)
        embeds, extra = self.lm.embed_tokens(tokens), {}
        if features is None:  # text (every prompt and generated token): its positions follow on
            start, self.next_position = self.next_position, self.next_position + len(ids)
            positions = torch.arange(start, self.next_position, device=self.device).expand(3, 1, -1)
        else:
            start = ids.index(self.video_pad) if self.video_pad in ids else 0
            video = slice(start, start + len(features))
            if ids[video] != [self.video_pad] * len(features) or ids.count(self.video_pad) != len(features):
                raise ValueError(f"a video segment holds one run of {len(features)} placeholders")
            types = torch.full_like(tokens, TEXT, dtype=torch.int32)
            types[:, video] = VIDEO
            positions, _ = self.model.model.get_rope_index(tokens, types, video_grid_thw=grid)
            positions = positions + self.next_position
            self.next_position = int(positions.max()) + 1
            embeds = _splice(embeds, video, features.index_select(0, kept).to(embeds.dtype)[None], dim=1)
            positions = _splice(positions, video, positions[..., video].index_select(-1, kept), dim=-1)
            if deepstack and len(kept):
                visual = torch.zeros(embeds.shape[1], dtype=torch.bool, device=self.device)
                visual[video.start : video.start + len(kept)] = True
                extra = deepstack_inputs(visual, [layer.index_select(0, kept) for layer in deepstack])
        out = self.lm(inputs_embeds=embeds, position_ids=positions, cache=self.cache, use_cache=True, **extra)
        self.segments.append(embeds.shape[1])
        self._evict()
        return out.last_hidden_state

    def _evict(self) -> None:
        """With ``max_cache_tokens``: drop the oldest chunk turns (never the system prompt). The kept keys
        were rotated at their own positions, so dropping others does not move them."""
        limit = self.settings.max_cache_tokens
        if limit is None or self.answering or sum(self.segments) <= limit:
            return
        drop = 0
        while len(self.segments) > 2 and sum(self.segments) - drop > limit:
            drop += self.segments.pop(1)
            self.chunk_times.pop(0)
        system = self.segments[0]
        for layer in self.cache.layers:
            layer.keys = torch.cat((layer.keys[..., :system, :], layer.keys[..., system + drop :, :]), dim=-2)
            layer.values = torch.cat(
                (layer.values[..., :system, :], layer.values[..., system + drop :, :]), dim=-2
            )


def make_pruner(stc: STCSettings, budget: int) -> STCPruner | DifferentialTokenDrop:
    """STC-Pruner keeping ``budget`` tokens per temporal patch, or with ``--compress dtd`` TimeChat-Online's
    differential token drop (``budget`` of every patch but the first, or by ``stc.dtd_threshold``)."""
    if stc.pruner_method == "dtd":
        threshold = stc.dtd_threshold
        return DifferentialTokenDrop(threshold, keep=None if threshold is not None else budget)
    return stc.stc_pruner(budget)


def prune(pruner: STCPruner | DifferentialTokenDrop, features: torch.Tensor) -> torch.Tensor:
    """The indices ``pruner`` keeps of one temporal patch's merged tokens ``[P, width]``, ascending."""
    if isinstance(pruner, DifferentialTokenDrop):
        return pruner.select(features[None])[0]
    _, indices = pruner.compress(features[None])
    return indices[0]


def _splice(whole: torch.Tensor, span: slice, part: torch.Tensor, dim: int) -> torch.Tensor:
    """``whole`` with its ``span`` along ``dim`` replaced by ``part`` (of any length there)."""
    before = whole.narrow(dim, 0, span.start)
    after = whole.narrow(dim, span.stop, whole.shape[dim] - span.stop)
    return torch.cat((before, part, after), dim=dim)


def deepstack_inputs(visual: torch.Tensor, layers: list[torch.Tensor]) -> dict:
    """The keyword arguments of ``Qwen3VLTextModel.forward`` that add deepstack features: ``visual``
    ``[L]`` marks the segment's visual tokens (at least one: the caller knows), ``layers`` holds each
    deepstack layer's rows for them."""
    return {"visual_pos_masks": visual[None], "deepstack_visual_embeds": layers}


def truncate(cache, length: int) -> None:
    """Cut every layer of a transformers ``DynamicCache`` back to its first ``length`` tokens."""
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[..., :length, :], layer.values[..., :length, :]
