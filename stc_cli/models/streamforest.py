"""StreamForest with STC: the ``VideoModel`` behind ``stc eval --model streamforest``.

Per frame, one frame per vision call and in time order (upstream batches 128 frames; STC-Cacher needs
each chunk's reference to be the previous one): squashed to 384 x 384, SigLIP (26 layers, the last
layer's output before the post-LayerNorm; the cacher on every layer), then the fixed sin-cos position
tables (spatial in the last 3/4 of the channels, the frame index in the first 1/4, repeating every 512
frames; [SF] ``llava/model/multimodal_projector/projector_FSTW_PEMF.py:35-90,185-233,293-295``), then
STC-Pruner (``--tokens-per-frame`` of the 729 tokens), then StreamForest's event memory
(``streamforest_memory.EventMemory``), whose tokens go through the MLP connector into Qwen2 in place of
``<image>`` in a ChatML prompt with StreamForest's time message; greedy decoding.

The protocol's ``memory`` setting says when the memory is built: ``question`` (upstream's evaluation) a
fresh memory over the frames held, read once, per question; ``video`` one memory per video, read after
every frame. With the pruner the memory's sizes shrink to fit what it keeps (``MemorySettings.pruned_to``)
and its event cuts still compare the frames before pruning (spec section 9.2).
"""

from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn.functional as F

from stc_cli.benchmarks.base import Query
from stc_cli.models import streamforest_load
from stc_cli.models.base import (
    STC_DEFAULTS,
    Answer,
    STCSettings,
    Step,
    count,
    greedy_on_cache,
    prefill_cache,
    stop_ids,
    timed,
)
from stc_cli.models.streamforest_inputs import IMAGE, TIME_WINDOW, prompt, spatial_table, temporal_table
from stc_cli.models.streamforest_load import StreamForestNet
from stc_cli.models.streamforest_memory import EventMemory
from stc_cli.protocols import Protocol, resolve

SHARE = 60 / 196  # STC keeps 60 of LLaVA-OV's 196 tokens; the same share of StreamForest's 729 is 223


class StreamForest:
    """The ``VideoModel`` (``models/base.py``) of StreamForest; ``protocol.memory`` says when its memory
    is built (see the module docstring)."""

    def __init__(
        self, net: StreamForestNet, stc: STCSettings = STC_DEFAULTS, protocol: Protocol | None = None
    ):
        protocol = protocol or resolve("streamforest", "ovo")
        if protocol.template != "streamforest" or protocol.decoding != "greedy":
            raise ValueError(f"protocol {protocol.name} ({protocol.model}) does not fit StreamForest")
        if stc.pruner_method != "stc" or stc.tome:
            method = "tome" if stc.tome else stc.pruner_method
            raise ValueError(f"--compress {method} does not run with --model streamforest")
        self.net, self.stc, self.protocol = net, stc, protocol
        self.device = next(net.llm.parameters()).device
        self.dtype = net.llm.dtype
        patches, width = net.patches, net.vision.config.hidden_size
        if stc.pruner and not 2 <= stc.tokens_per_frame <= patches:
            raise ValueError(
                f"--tokens-per-frame must be between 2 and {patches}, got {stc.tokens_per_frame}"
            )
        self.kept = stc.tokens_per_frame if stc.pruner else patches
        self.memory_settings = net.memory.pruned_to(self.kept) if stc.pruner else net.memory
        self.heads = net.vision.config.num_attention_heads
        self.tables = (
            spatial_table(width, int(patches**0.5)).to(self.device, self.dtype),
            temporal_table(width).to(self.device, self.dtype),
        )
        self.cacher = stc.attach_cacher(net.vision)
        self.pruner = stc.stc_pruner(self.kept) if stc.pruner else None
        self.vocab = net.vocab  # the LM head rows upstream keeps (it reads the whole vocabulary: once)
        self.stop_ids = stop_ids(net.tokenizer, protocol.stop, net.llm.generation_config.eos_token_id)
        self.reset()

    def describe(self) -> dict:
        """Every knob that moves a score or a timing, for run.json."""
        return {
            "model": "streamforest",
            "model_path": self.net.source,
            "dtype": str(self.dtype).removeprefix("torch."),
            "frame_size": list(self.net.transform.size),
            "tokens_per_frame": self.kept,
            "memory": asdict(self.memory_settings),
            "stc": asdict(self.stc),
            "stop_ids": sorted(self.stop_ids),
            "vocab": self.vocab,
        }

    def _new_memory(self) -> EventMemory:
        settings = asdict(self.memory_settings)
        return EventMemory(self.net.vision.config.hidden_size, self.heads, **settings)

    @torch.inference_mode()
    def reset(self) -> None:
        self.frames: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # (kept tokens, similarity)
        self.times: list[float] = []
        self.previous: torch.Tensor | None = None  # the last frame before pruning, flat
        self.memory = self._new_memory() if self.protocol.memory == "video" else None
        if self.cacher:
            self.cacher.reset()
        if self.pruner:
            self.pruner.reset()

    @torch.inference_mode()
    def add_frames(self, frames: torch.Tensor, times: tuple[float, ...]) -> Step:
        step = Step()
        for frame, time in zip(frames, times, strict=True):
            with timed(step, "vit", self.device):
                features = self.encode(frame[None])[0]  # [P, width], position tables added
            kept, similarity = features, None
            if self.pruner:
                with timed(step, "compress", self.device):
                    kept = self.pruner.compress(features[None])[0][0]
                    flat = features.reshape(-1)
                    if self.previous is not None:
                        similarity = F.cosine_similarity(self.previous, flat, dim=0)
                    self.previous = flat
            if self.memory is not None:
                with timed(step, "memory", self.device):
                    self.memory.update(kept, similarity)
                    self.memory.tokens()  # read now, as a live system might be asked at any frame
            else:
                self.frames.append((kept, similarity))
            self.times.append(time)
            count(step, "frames_encoded", 1)
            count(step, "visual_tokens_in", self.net.patches)
            count(step, "visual_tokens_kept", len(kept))
        return step

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``[N, H, W, 3]`` following the ``len(self.times)`` already held -> the tower's last
        layer plus the position tables ``[N, P, width]`` (x + spatial + temporal, in the model's dtype)."""
        pixels = self.net.transform(frames, dtype=self.dtype, device=self.device)
        states = self.net.vision(pixels, output_hidden_states=True).hidden_states[-1]
        index = torch.arange(len(self.times), len(self.times) + len(frames), device=self.device) % TIME_WINDOW
        spatial, temporal = self.tables
        return states + spatial[None] + temporal[index][:, None]

    @torch.inference_mode()
    def answer(self, query: Query) -> Answer:
        """Read the memory (``question``: built afresh from the frames held), prefill the prompt with it in
        place of ``<image>``, decode greedily."""
        if not self.times:
            raise ValueError(f"{query.id}: no frames in its window to answer from")
        answer = Answer(model_input=prompt(tuple(self.times), query.prompt))
        with timed(answer, "answer", self.device):
            with timed(answer, "memory", self.device):
                visual = self.memory_tokens()
            before, after = answer.model_input.split(IMAGE, 1)
            with timed(answer, "prefill", self.device):
                embeds = torch.cat([self._embed(before), self.net.projector(visual), self._embed(after)])
                embeds = embeds[: self.net.max_length][None]
                hidden, cache = prefill_cache(self.net.llm, embeds)
            # greedy over the LM head rows upstream keeps (its head is resized to the tokenizer)
            tokens = greedy_on_cache(
                self.net.llm,
                hidden[0, -1],
                cache,
                embeds.shape[1],
                self.protocol.max_new_tokens,
                self.stop_ids,
                self.vocab,
            )
        answer.text = self.net.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        count(answer, "memory_tokens", len(visual))
        count(answer, "new_tokens", len(tokens))
        return answer

    def memory_tokens(self) -> torch.Tensor:
        """The visual memory an answer reads, ``[N, width]``: under ``question`` built afresh from the frames
        held and read once (upstream's evaluation), under ``video`` the memory kept since ``reset()``."""
        memory = self.memory
        if memory is None:
            memory = self._new_memory()
            for kept, similarity in self.frames:
                memory.update(kept, similarity)
        return memory.tokens()

    def _embed(self, text: str) -> torch.Tensor:
        ids = self.net.tokenizer(text, add_special_tokens=False).input_ids
        return self.net.llm.model.embed_tokens(torch.tensor(ids, device=self.device))


def build(config, protocol: Protocol, device, dtype) -> StreamForest:
    """``stc eval --model streamforest``: the checkpoint of ``config.model_path`` (default the released
    MCG-NJU/StreamForest-Qwen2-7B)."""
    net = streamforest_load.load(
        config.model_path or streamforest_load.DEFAULT_CHECKPOINT, device=device, dtype=dtype
    )
    stc = STCSettings.from_config(config, round(net.patches * SHARE))
    return StreamForest(net, stc, protocol)
