"""LiveCC (a stock Qwen2-VL) with STC: the ``VideoModel`` behind ``stc eval --model livecc``.

The stream as LiveCC runs it (the ``livecc-stream`` protocol): frames at 2 fps, cut into 1-second chunks
of two frames (one temporal patch), each appended as its own user turn ``Time=t0-t1s`` + the chunk's
video tokens, on a KV cache carried across chunks. A question is one more user turn, answered greedily
(or, with ``option-logits`` decoding, by the option token with the largest logit after "The answer
is:\\n"); the cache is cut back afterwards, so answering leaves the memory as it was. A frame still
waiting for its partner is not visible to a question. LiveCC's own OVO-Bench evaluation, one turn per
clip, is ``livecc_clip.py``.

Every segment gets explicit 3-D M-RoPE positions (``get_rope_index`` on the segment, shifted past the
largest position so far): transformers 5.x alone would give later video segments 1-D positions. STC:
the cacher on every vision block, the pruner after the patch merger per temporal patch; kept tokens keep
their full-grid (t, h, w) positions, so the text after them sits where it would have without pruning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from stc_cli.benchmarks.base import Query
from stc_cli.compress import DifferentialTokenDrop, STCCacher, STCPruner
from stc_cli.models.base import STC_DEFAULTS, Answer, STCSettings, Step, count, timed
from stc_cli.models.qwen2vl import Qwen2VL
from stc_cli.protocols import Protocol, resolve

SYSTEM_PROMPT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
CHUNK_TURN = "<|im_start|>user\nTime={start:.1f}-{end:.1f}s<|vision_start|>{video}<|vision_end|><|im_end|>\n"
QUESTION_TURN = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
LOGITS_PREFILL = "The answer is:\n"
CANDIDATES = ("No", "Yes", *"0123456789")  # LiveCC's OVO-Bench answers besides the option letters
TEXT, VIDEO = 0, 2  # mm_token_type_ids
PIXELS = (100 * 28 * 28, 384 * 28 * 28)  # livecc-utils: 100 to 384 merged tokens per temporal patch


@dataclass(frozen=True)
class LiveCCSettings:
    min_pixels: int = PIXELS[0]
    max_pixels: int = PIXELS[1]
    max_cache_tokens: int | None = None  # not upstream: evict the oldest chunks past this many tokens


class LiveCC:
    """The ``VideoModel`` (``models/base.py``) of LiveCC's live loop; ``TEMPLATE`` and ``DECODINGS`` say
    which protocols it runs (``livecc_clip.LiveCCClip`` runs the one-turn-per-clip evaluation)."""

    TEMPLATE = "livecc-turns"
    DECODINGS = ("greedy", "option-logits")

    def __init__(
        self,
        qwen: Qwen2VL,
        stc: STCSettings = STC_DEFAULTS,
        settings: LiveCCSettings = LiveCCSettings(),
        protocol: Protocol | None = None,  # None: livecc-stream
    ):
        protocol = protocol or resolve("livecc", "demo", "livecc-stream")
        if protocol.template != self.TEMPLATE or protocol.decoding not in self.DECODINGS:
            raise ValueError(
                f"protocol {protocol.name} ({protocol.model}) does not fit {type(self).__name__}"
            )
        self.qwen, self.stc, self.settings, self.protocol = qwen, stc, settings, protocol
        self.model = qwen.model
        self.lm = self.model.model.language_model
        self.device = next(self.model.parameters()).device
        self.frames = replace(qwen.frames, min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
        self.cacher = (
            STCCacher(stc.update_ratio, stc.cache_interval).attach(self.model.model.visual)
            if stc.cacher
            else None
        )
        tokenizer = qwen.tokenizer
        self.video_pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
        self.stop_ids = {tokenizer.eos_token_id}
        if protocol.stop == "eos+im_end":
            self.stop_ids.add(tokenizer.convert_tokens_to_ids("<|im_end|>"))
        self.reset()

    def describe(self) -> dict:
        return {
            "model": "livecc",
            "model_path": self.qwen.source,
            "dtype": str(self.lm.dtype).removeprefix("torch."),
            "stc": asdict(self.stc),
            "livecc": asdict(self.settings),
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
        self._append(self._ids(SYSTEM_PROMPT))

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
        features, grid, kept = self._encode_patch(pair, self.size, step)
        with timed(step, "prefill", self.device):
            # the chunk covers its two frame intervals: at 2 fps, frames at 0.0 and 0.5 are "Time=0.0-1.0s"
            text = CHUNK_TURN.format(
                start=start, end=2 * end - start, video="<|video_pad|>" * features.shape[0]
            )
            self.chunk_times.append((start, end))
            self._append(self._ids(text), grid, features, kept)

    def _encode_patch(self, pair: torch.Tensor, size, step: Step):
        """One temporal patch (2 frames) through the vision tower (cacher inside) and the pruner:
        ``(features [P, width], grid_thw [[1, gh, gw]], kept indices ascending)``."""
        with timed(step, "vit", self.device):
            pixels, grid = self.frames(pair, size, dtype=self.lm.dtype, device=self.device)
            features = self.model.model.visual(pixels, grid_thw=grid).pooler_output  # [P, width]
        kept = torch.arange(features.shape[0], device=self.device)
        if self.stc.pruner:
            with timed(step, "compress", self.device):
                kept = self._prune(features)
        count(step, "frames_encoded", 2)
        count(step, "visual_tokens_in", features.shape[0])
        count(step, "visual_tokens_kept", len(kept))
        return features, grid, kept

    def _prune(self, features: torch.Tensor) -> torch.Tensor:
        """Indices of the merged tokens the pruner keeps, ascending (raster order of the merged grid).
        ``tokens_per_frame`` applies per temporal patch, at most all of its tokens. ``--compress dtd`` puts
        TimeChat-Online's differential token drop there (its home model family), against the previous
        temporal patch; the kept tokens keep their positions as STC-Pruner's do."""
        if self.pruner is None:
            budget = min(self.stc.tokens_per_frame, features.shape[0])
            if self.stc.pruner_method == "dtd":
                threshold = self.stc.dtd_threshold
                self.pruner = DifferentialTokenDrop(threshold, keep=None if threshold is not None else budget)
            else:
                self.pruner = STCPruner(budget)
        if isinstance(self.pruner, DifferentialTokenDrop):
            return self.pruner.select(features[None])[0]
        _, indices = self.pruner.compress(features[None])
        return indices[0]

    @torch.inference_mode()
    def answer(self, query: Query) -> Answer:
        answer = Answer(model_input=self.question_text(query))
        saved = (self.cache.get_seq_length(), self.next_position, list(self.segments))
        self.answering = True  # no eviction: the question and answer are cut back afterwards
        try:
            with timed(answer, "answer", self.device):
                hidden = self._append(self._ids(answer.model_input))
                logits = self.model.lm_head(hidden[0, -1]).float()
                if self.protocol.decoding == "greedy":
                    answer.text = self._generate(logits, answer)
                else:
                    answer.text = self._best_candidate(logits, query)
        finally:
            length, self.next_position, self.segments = saved
            _truncate(self.cache, length)
            self.answering = False
        answer.frame_times = tuple(t for chunk in self.chunk_times for t in chunk)
        return answer

    def question_text(self, query: Query) -> str:
        """The question turn; "The answer is:\\n" opens the reply when the answer is read from logits."""
        prefill = "" if self.protocol.decoding == "greedy" else LOGITS_PREFILL
        return QUESTION_TURN.format(prompt=query.prompt) + prefill

    def _best_candidate(self, logits: torch.Tensor, query: Query) -> str:
        """``option-logits``: the option letter (else No, Yes or a digit) whose first token scores best."""
        names = [chr(ord("A") + i) for i in range(len(query.options))] if query.options else list(CANDIDATES)
        first = [self._ids(name)[0, 0].item() for name in names]
        return names[int(torch.argmax(logits[first]))]

    def _generate(self, logits: torch.Tensor, answer: Answer) -> str:
        tokens: list[int] = []
        while True:
            token = int(logits.argmax())
            if token in self.stop_ids:
                break
            tokens.append(token)
            if len(tokens) == self.protocol.max_new_tokens:
                break
            logits = self.model.lm_head(self._append(self._ids_of([token]))[0, -1]).float()
        count(answer, "new_tokens", len(tokens))
        return self.qwen.tokenizer.decode(tokens, skip_special_tokens=True)

    # -- the LLM -----------------------------------------------------------------------------------
    def _ids(self, text: str) -> torch.Tensor:
        return self._ids_of(self.qwen.tokenizer(text, add_special_tokens=False).input_ids)

    def _ids_of(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], device=self.device)

    def _append(self, ids, grid=None, features=None, kept=None) -> torch.Tensor:
        """Run segment ``ids [1, L]`` on the cache at explicit M-RoPE positions after everything so far;
        video placeholders take ``features`` (only the ``kept`` rows enter the cache). Returns the
        segment's last hidden states ``[1, L', width]``."""
        embeds = self.lm.embed_tokens(ids)
        is_video = ids[0] == self.video_pad
        types = torch.where(is_video, VIDEO, TEXT)[None].int()
        if grid is None:
            positions = torch.arange(ids.shape[1], device=self.device).expand(3, 1, -1)
        else:
            positions, _ = self.model.model.get_rope_index(ids, types, video_grid_thw=grid)
        positions = positions + self.next_position
        keep = torch.ones(ids.shape[1], dtype=torch.bool, device=self.device)
        if features is not None:
            embeds[0, is_video] = features.to(embeds.dtype)
            video_keep = torch.zeros(features.shape[0], dtype=torch.bool, device=self.device)
            video_keep[kept] = True
            keep[is_video] = video_keep
        self.next_position = int(positions.max()) + 1
        out = self.lm(
            inputs_embeds=embeds[:, keep],
            position_ids=positions[:, :, keep],
            cache=self.cache,
            use_cache=True,
        )
        self.segments.append(int(keep.sum()))
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


def _truncate(cache, length: int) -> None:
    """Cut every layer of a transformers ``DynamicCache`` back to its first ``length`` tokens."""
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[..., :length, :], layer.values[..., :length, :]


def build(config, protocol: Protocol, device, dtype) -> LiveCC:
    """``stc eval --model livecc``: the Qwen2-VL checkpoint of ``config.model_path`` in LiveCC's loop, or
    in its OVO-Bench evaluation's one turn per clip (``livecc_clip.py``) as ``protocol`` says."""
    from stc_cli.models import qwen2vl

    qwen = qwen2vl.load(config.model_path or qwen2vl.DEFAULT_CHECKPOINT, device=device, dtype=dtype)
    stc = STCSettings.from_config(config, STCSettings.tokens_per_frame)  # per temporal patch
    settings = LiveCCSettings(max_cache_tokens=config.max_cache_tokens)
    if protocol.template == "livecc-clip":
        from stc_cli.models.livecc_clip import LiveCCClip

        return LiveCCClip(qwen, stc, settings, protocol)
    return LiveCC(qwen, stc, settings, protocol)
