"""Dispider's per-clip perception with STC, kept per clip (``../shared/docs/upstream-dispider.md`` section 2).

Frames arrive in time order; each goes through the CLIP tower alone (one chunk for STC-Cacher, so the
cacher's reference carries across clip boundaries and does not depend on how frames are batched), is
2x2-mixed, and the pruner picks its kept mixed tokens with its state run in stream order (section 7.2 A).
Every ``frames_per_clip`` frames make a clip, perceived once: the pool projector and the compact model's row
give its memory (slot states) and time state (last state). Rows do not attend to each other, so a clip's
perception depends only on its own frames and time text: stored clips are reused by every later question.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stc_cli.models.base import Step, count, timed
from stc_cli.models.dispider_glue import clip_text, mix_2x2
from stc_cli.models.frames import resize_uint8


@dataclass
class Clip:
    """One perceived clip: its mixed CLIP tokens ``[T, R, 4C]``, the pruner's kept indices ``[T, K]`` (None
    without the pruner), its memory ``[T * P, d]``, time state ``[d]`` and span in seconds."""

    tokens: torch.Tensor
    kept: torch.Tensor | None
    memory: torch.Tensor
    time: torch.Tensor
    span: tuple[float, float]

    def reaction_tokens(self) -> torch.Tensor:
        """The CLIP tokens the reaction model reads, ``[T * K, 4C]``: the kept ones of each frame, in raster
        order (all ``T * R`` without the pruner)."""
        tokens = self.tokens
        if self.kept is not None:
            tokens = tokens.gather(1, self.kept[..., None].expand(-1, -1, tokens.shape[-1]))
        return tokens.reshape(-1, tokens.shape[-1])


class Perception:
    """Frames -> stored clips, with the cacher and pruner of the model (either may be None)."""

    def __init__(self, net, cacher, pruner):
        self.net, self.cacher, self.pruner = net, cacher, pruner
        self.device = next(net.compact.parameters()).device
        self.dtype = net.compact.dtype
        self.reset()

    def reset(self) -> None:
        self.pending: list[tuple[torch.Tensor, torch.Tensor | None, float]] = []  # (tokens, kept, time)
        self.stored: list[Clip] = []
        if self.cacher:
            self.cacher.reset()
        if self.pruner:
            self.pruner.reset()

    def squash(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` -> ``[N, side, side, 3]``: a non-square frame squashed to a ``min(H, W)``
        square (nearest; [D] inference.py:97-101), then resized to the tower's side (bicubic, antialiased,
        as the CLIP image processor's PIL resize; its centre crop of a square is the whole frame)."""
        x = frames.permute(0, 3, 1, 2)
        height, width = x.shape[-2:]
        if height != width:
            side = min(height, width)
            x = F.interpolate(x.float(), size=(side, side)).to(torch.uint8)
        size = self.net.transform.size
        if tuple(x.shape[-2:]) != size:
            x = resize_uint8(x, size, float_path=x.device.type != "cpu")
        return x.permute(0, 2, 3, 1).contiguous()

    def add(self, frames: torch.Tensor, times, step: Step) -> None:
        """Encode squashed ``frames`` one at a time; perceive each clip they complete."""
        for frame, time in zip(frames, times, strict=True):
            with timed(step, "vit", self.device):
                pixels = self.net.transform(frame[None], dtype=self.dtype, device=self.device)
                states = self.net.vision(pixel_values=pixels, output_hidden_states=True).hidden_states
                tokens = mix_2x2(states[self.net.select_layer][:, 1:])  # CLS dropped after the tower
            kept = None
            if self.pruner:
                with timed(step, "compress", self.device):
                    kept = self.pruner.compress(tokens)[1][0]
            self.pending.append((tokens[0], kept, float(time)))
            count(step, "frames_encoded", 1)
            count(step, "visual_tokens_in", tokens.shape[1])
            count(step, "visual_tokens_kept", tokens.shape[1] if kept is None else len(kept))
            if len(self.pending) == self.net.frames_per_clip:
                self.stored.append(self.perceive(self.pending, step))
                self.pending = []

    def clips(self, step: Step) -> list[Clip]:
        """The stored clips, reused, and the frames since the last one as a clip of its own, perceived now
        and not stored."""
        count(step, "clips_reused", len(self.stored))
        tail = [self.perceive(self.pending, step)] if self.pending else []
        return [*self.stored, *tail]

    def perceive(self, frames: list, step: Step) -> Clip:
        """One clip: the pool projector over its mixed tokens and one compact-model row."""
        tokens = torch.stack([t for t, _, _ in frames])
        kept = torch.stack([k for _, k, _ in frames]) if self.pruner else None
        span = (frames[0][2], frames[-1][2])
        with timed(step, "perception", self.device):
            text = self.net.compact_tokenizer(clip_text(*span), add_special_tokens=False).input_ids
            embedded = self.net.compact.embed_tokens(torch.tensor(text, device=self.device, dtype=torch.long))
            row = torch.cat([embedded, self.net.pool(tokens.reshape(-1, tokens.shape[-1]))])
            states = self.net.compact(inputs_embeds=row[None]).last_hidden_state[0]
        slots = len(frames) * self.net.pool.pool_num
        count(step, "clips_perceived", 1)
        return Clip(tokens, kept, states[-1 - slots : -1], states[-1], span)
