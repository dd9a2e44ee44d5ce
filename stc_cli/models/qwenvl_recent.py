"""SimpleStream's recent-frames evaluation of a Qwen2.5-VL or Qwen3-VL: the ``simplestream`` protocols.

Each question is answered from the last N one-second chunks of its clip ([SS] ``lib/recent_window_eval*.py``;
``stc_cli/protocols/qwenvl.py`` cites every setting):

1. frames: the runner feeds the clip's frames (1 fps spread evenly, at most 768: qwen-vl-utils'); the
   model keeps those of the last ``recent_frames`` chunks (a frame's chunk is ``int(time // 1.0)``, so a
   chunk holds 0, 1 or 2 of them) and counts them all;
2. each kept frame is resized as qwen-vl-utils resizes the clip (``qwen_vl_utils_size``: factor 28, 128
   to 768 merged tokens, a share of the clip's budget; torchvision's uint8 bicubic on the CPU, as
   upstream decodes on the CPU), then goes through the image processor as an image
   (``Qwen2VLFrames``: Qwen3-VL rounds to multiples of 32 and resizes again; the frame tiled over the
   temporal patch), one frame per vision-tower call (the cacher's unit; upstream batches up to 8 images
   per call, and the tower attends within an image only);
3. the prompt, each piece tokenized on its own as upstream builds it: ``<|im_start|>`` ``user\\n``, the
   vision tokens (``one-block``: all frames in one ``<|vision_start|>...<|vision_end|>``; ``frame-blocks``:
   one block per frame), ``\\n``, the question, ``<|im_end|>`` ``\\n`` ``<|im_start|>`` ``assistant\\n``;
4. positions ``sequential`` (0, 1, 2, ... over the whole prompt: what upstream's ``generate`` call ends up
   with) or ``mrope`` (``get_rope_index``); deepstack features (Qwen3-VL) only where the protocol says;
5. greedy decoding up to ``max_new_tokens``, stopping at the checkpoint's eos ids, with its
   ``repetition_penalty`` on the generated tokens (what ``generate`` does from ``inputs_embeds``); the
   answer is the decoded text without special tokens, stripped.

STC: the cacher starts afresh for every question (each question is a clip of its own, as upstream
encodes it), one frame per chunk; the pruner keeps, per frame, STC's share of its merged tokens
(``--tokens-per-frame`` to fix a count), each kept token at the position it has in the unpruned prompt
(with its deepstack rows), so the text after the frames sits where it would have.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from stc_cli.benchmarks.base import Query
from stc_cli.models.base import Answer, STCSettings, Step, count, greedy, timed
from stc_cli.models.frames import resize_uint8
from stc_cli.models.qwen2vl_frames import qwen_vl_utils_size
from stc_cli.models.qwenvl_stream import IMAGE, TEXT, deepstack_inputs, make_pruner, prune
from stc_cli.protocols import Protocol

TEMPLATE = "simplestream"
STC_SHARE = (60, 196)  # STC's default budget: 60 of LLaVA-OneVision's 196 tokens per frame


def pruner_budget(stc: STCSettings, tokens: int) -> int:
    """Merged tokens the pruner keeps of a frame of ``tokens``: ``--tokens-per-frame`` (at most all of
    them), else (``tokens_per_frame`` 0) STC's share, 60 of every 196."""
    if stc.tokens_per_frame:
        return min(stc.tokens_per_frame, tokens)
    return max(1, round(tokens * STC_SHARE[0] / STC_SHARE[1]))


class RecentFrames:
    """The ``VideoModel`` (``models/base.py``) of SimpleStream's protocol; ``name`` is the ``--model``."""

    takes_whole_clip = False

    def __init__(self, qwen, stc: STCSettings, protocol: Protocol, name: str):
        if protocol.template != TEMPLATE or protocol.decoding != "greedy":
            raise ValueError(
                f"protocol {protocol.name} ({protocol.model}) does not fit {type(self).__name__}"
            )
        self.qwen, self.stc, self.protocol, self.name = qwen, stc, protocol, name
        self.model = qwen.model
        self.lm = self.model.model.language_model
        self.device = next(self.model.parameters()).device
        self.cacher = stc.attach_cacher(self.model.model.visual)
        tokenizer = qwen.tokenizer
        special = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>")
        self.im_start, self.im_end, self.vision_start, self.vision_end, self.image_pad = (
            tokenizer.convert_tokens_to_ids(token) for token in special
        )
        eos = qwen.generation.get("eos_token_id") or [
            tokenizer.eos_token_id,
            tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        ]
        self.stop_ids = set(eos)
        self.repetition_penalty = qwen.generation.get("repetition_penalty")
        self.reset()

    def describe(self) -> dict:
        settings = ("recent_frames", "chunk_seconds", "layout", "positions", "deepstack")
        return {
            "model": self.name,
            "model_path": self.qwen.source,
            "dtype": str(self.lm.dtype).removeprefix("torch."),
            "stc": asdict(self.stc),
            "pruner_budget": (
                self.stc.tokens_per_frame or f"{STC_SHARE[0]}/{STC_SHARE[1]} of each frame's tokens"
            ),
            "recent": {key: getattr(self.protocol, key) for key in settings},
            "frames": asdict(self.qwen.frames),
            "stop_ids": sorted(self.stop_ids),
            "repetition_penalty": self.repetition_penalty,
        }

    def reset(self) -> None:
        self.chunks: dict[int, list[tuple[torch.Tensor, float]]] = {}  # the last recent_frames chunks
        self.received = 0  # frames of the clip: they set the frame size, as in qwen-vl-utils

    def add_frames(self, frames: torch.Tensor, times: tuple[float, ...]) -> Step:
        for frame, time in zip(frames, times, strict=True):
            self.chunks.setdefault(int(time // self.protocol.chunk_seconds), []).append((frame, time))
        self.received += len(frames)
        for old in sorted(self.chunks)[: -self.protocol.recent_frames]:
            del self.chunks[old]
        return Step()

    @torch.inference_mode()
    def answer(self, query: Query) -> Answer:
        held = [item for chunk in sorted(self.chunks) for item in self.chunks[chunk]]
        if not held:
            raise ValueError("no frames in the question's clip")
        answer = Answer(model_input=f"\n{query.prompt}<|im_end|>\n<|im_start|>assistant\n")
        answer.frame_times = tuple(time for _, time in held)
        frames = torch.stack([frame for frame, _ in held])
        features, grids, kept, deepstack = self._encode(frames, answer)
        with timed(answer, "prefill", self.device):
            ids, is_image = self._prompt(query.prompt, [int(g[1] * g[2]) // 4 for g in grids.tolist()])
            types = torch.where(is_image, IMAGE, TEXT)[None].int()
            if self.protocol.positions == "mrope":
                positions, _ = self.model.model.get_rope_index(ids, types, image_grid_thw=grids)
            else:
                positions = torch.arange(ids.shape[1], device=self.device).expand(3, 1, -1)
            embeds = self.lm.embed_tokens(ids)
            embeds[0, is_image] = features.to(embeds.dtype)
            keep = torch.ones(ids.shape[1], dtype=torch.bool, device=self.device)
            image_keep = torch.zeros(features.shape[0], dtype=torch.bool, device=self.device)
            image_keep[kept] = True
            keep[is_image] = image_keep
            visual = is_image[keep]
            extra = {}
            if deepstack and bool(visual.any()):
                extra = deepstack_inputs(visual, [layer[kept] for layer in deepstack])
            from transformers import DynamicCache

            cache = DynamicCache(config=self.lm.config)
            hidden = self.lm(
                inputs_embeds=embeds[:, keep],
                position_ids=positions[:, :, keep],
                cache=cache,
                use_cache=True,
                **extra,
            ).last_hidden_state
            logits = self.model.lm_head(hidden[0, -1]).float()
        position = int(positions.max()) + 1

        def next_logits(token: int) -> torch.Tensor:
            nonlocal position
            step_ids = torch.tensor([[token]], device=self.device)
            step_positions = torch.full((3, 1, 1), position, device=self.device)
            position += 1
            out = self.lm(
                inputs_embeds=self.lm.embed_tokens(step_ids),
                position_ids=step_positions,
                cache=cache,
                use_cache=True,
            )
            return self.model.lm_head(out.last_hidden_state[0, -1]).float()

        with timed(answer, "answer", self.device):
            tokens = greedy(
                logits, self.protocol.max_new_tokens, self.stop_ids, next_logits, self.repetition_penalty
            )
        count(answer, "new_tokens", len(tokens))
        answer.text = self.qwen.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return answer

    def _encode(self, frames: torch.Tensor, step: Step):
        """The held frames through the tower (one call each, the cacher inside) and the pruner:
        ``(features [P, width] of every frame, grids [n, 3], kept indices into features, deepstack rows
        per layer or None)``."""
        if self.cacher:
            self.cacher.reset()
        pruner = None
        parts, grids, kept, deepstack = [], [], [], []
        with timed(step, "vit", self.device):
            images = self._images(frames)
        offset = 0
        for image in images:
            with timed(step, "vit", self.device):
                pixels, grid = self.qwen.frames(
                    image.expand(2, -1, -1, -1), dtype=torch.float32, device="cpu"
                )
                out = self.model.model.visual(
                    pixels.to(self.device, self.lm.dtype), grid_thw=grid.to(self.device)
                )
            features = out.pooler_output
            chosen = torch.arange(features.shape[0], device=self.device)
            if self.stc.pruner:
                with timed(step, "compress", self.device):
                    pruner = pruner or make_pruner(self.stc, pruner_budget(self.stc, features.shape[0]))
                    chosen = prune(pruner, features)
            parts.append(features)
            grids.append(grid.to(self.device))
            kept.append(chosen + offset)
            offset += features.shape[0]
            if self.protocol.deepstack and getattr(out, "deepstack_features", None):
                deepstack.append(out.deepstack_features)
        count(step, "frames_encoded", len(images))
        count(step, "visual_tokens_in", offset)
        kept = torch.cat(kept)
        count(step, "visual_tokens_kept", len(kept))
        layers = [torch.cat(rows) for rows in zip(*deepstack, strict=True)] if deepstack else None
        return torch.cat(parts), torch.cat(grids), kept, layers

    def _images(self, frames: torch.Tensor) -> torch.Tensor:
        """The held frames ``[n, H, W, 3]`` as qwen-vl-utils hands them to the processor: all resized to
        the clip's one size (``received`` frames decoded), uint8, on the CPU."""
        size = qwen_vl_utils_size(frames.shape[1], frames.shape[2], self.received)
        x = frames.cpu().permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != size:
            x = resize_uint8(x, size, float_path=False)
        return x.permute(0, 2, 3, 1).contiguous()

    def _prompt(self, question: str, tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt's ids ``[1, L]`` as upstream builds them (each text piece tokenized on its own) for
        frames of ``tokens`` merged tokens each, and the mask of the image tokens."""

        def encode(text: str) -> list[int]:
            return self.qwen.tokenizer(text, add_special_tokens=False).input_ids

        ids = [self.im_start, *encode("user\n")]
        if self.protocol.layout == "one-block":
            ids += [self.vision_start, *[self.image_pad] * sum(tokens), self.vision_end]
        else:
            for n in tokens:
                ids += [self.vision_start, *[self.image_pad] * n, self.vision_end]
        ids += [
            *encode("\n"),
            *encode(question),
            self.im_end,
            *encode("\n"),
            self.im_start,
            *encode("assistant\n"),
        ]
        ids = torch.tensor([ids], device=self.device)
        return ids, ids[0] == self.image_pad
