"""Dispider with STC: the ``VideoModel`` behind ``stc eval --model dispider`` (experimental).

Per frame, in time order, one frame per vision call: squashed to a ``min(H, W)`` square (nearest,
[D] ``inference.py:97-101``), CLIP preprocessing, the perception CLIP tower (``hidden_states[select_layer]``
without CLS; STC-Cacher on every layer, CLS treated like any other token), the 2x2 mixing, and STC-Pruner's
choice among the mixed tokens (its running state in stream order, the kept indices stored per frame; spec
section 7.2 A). Per clip of ``frames_per_clip`` frames: the pool projector and one compact-Qwen2 row
``"This contains a clip sampled in s to e seconds" + tokens`` whose slot states are the clip's memory and
whose last state its time state (``dispider_perception.py``). Per question: the decision sequence
``[<has_answer>, Q, M_1..M_n, Q, <to_do>]`` (Q = question + ``<to_do>``), its last state retrieves the top 4
clips by their time states, and the reaction Qwen2 answers greedily from, per retrieved clip, its CLIP
tokens (the pruner's kept ones) and memory, then the global memory (``dispider_glue.py``).

The protocol's ``clips`` setting: ``question`` (Dispider's OVO-Bench wrapper) rebuilds the clips per question
from the frames held, ``clamp(round(duration / 16), 1, 100)`` clips of 16 frames picked by ``get_seq_frames``;
``video`` perceives each clip once as the stream fills it and keeps the clip store (a partial last clip is
perceived per question, not stored). ``decide`` runs the proactive "decide to answer" loop over the store;
``wants_to_answer`` is that loop as the runner drives it, one clip at a time (``proactive`` protocols).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from stc_cli.benchmarks.base import Query
from stc_cli.models import dispider_load
from stc_cli.models.base import (
    Answer,
    STCSettings,
    Step,
    count,
    greedy_on_cache,
    prefill_cache,
    stop_ids,
    timed,
)
from stc_cli.models.dispider_glue import (
    clip_count,
    decision_layout,
    reaction_prompt,
    retrieve,
    sample_indices,
    segments,
)
from stc_cli.models.dispider_load import DispiderNet
from stc_cli.models.dispider_perception import Clip, Perception
from stc_cli.protocols import Protocol, resolve

SHARE = 60 / 196  # STC keeps 60 of LLaVA-OV's 196 tokens; the same share of Dispider's 64 mixed tokens is 20
STC_DISPIDER = {"cache_interval": 4, "update_ratio": 0.25}  # [STC-d] docs/dispider/reproduce.md


@dataclass
class _Loop:
    """One question's proactive loop: its decision parts, the 1-based clip counts that triggered, the
    summaries of the segments they closed and the silent-head logit after each clip so far."""

    parts: dict[str, torch.Tensor]
    triggers: list[int] = field(default_factory=list)
    summaries: list[torch.Tensor] = field(default_factory=list)
    logits: list[float] = field(default_factory=list)


class Dispider:
    """The ``VideoModel`` (``models/base.py``) of Dispider; ``protocol.clips`` says when clips are
    perceived."""

    def __init__(self, net: DispiderNet, stc: STCSettings | None = None, protocol: Protocol | None = None):
        stc = stc or STCSettings(**STC_DISPIDER, tokens_per_frame=round(net.resolution * SHARE))
        protocol = protocol or resolve("dispider", "demo")
        if getattr(protocol, "clips", None) not in ("question", "video") or protocol.decoding != "greedy":
            raise ValueError(f"protocol {protocol.name} ({protocol.model}) does not fit Dispider")
        if stc.pruner_method != "stc" or stc.tome:
            method = "tome" if stc.tome else stc.pruner_method
            raise ValueError(f"--compress {method} does not run with --model dispider")
        if stc.pruner and not 1 <= stc.tokens_per_frame <= net.resolution:
            raise ValueError(
                f"--tokens-per-frame must be between 1 and {net.resolution}, got {stc.tokens_per_frame}"
            )
        self.net, self.stc, self.protocol = net, stc, protocol
        self.proactive = getattr(protocol, "proactive", False)  # the runner's cue (models/base.py)
        self.device = next(net.reaction.parameters()).device
        self.dtype = net.reaction.dtype
        self.cacher = stc.attach_cacher(net.vision)
        self.pruner = stc.stc_pruner() if stc.pruner else None
        self.perception = Perception(net, self.cacher, self.pruner)
        self.stop_ids = stop_ids(net.tokenizer, protocol.stop, net.reaction.generation_config.eos_token_id)
        self.reset()

    def describe(self) -> dict:
        """Every knob that moves a score or a timing, for run.json."""
        return {
            "model": "dispider",
            "model_path": self.net.source,
            "dtype": str(self.dtype).removeprefix("torch."),
            "frame_size": list(self.net.transform.size),
            "select_layer": self.net.select_layer,
            "frames_per_clip": self.net.frames_per_clip,
            "resolution": self.net.resolution,
            "pool_num": self.net.pool.pool_num,
            "clips": self.protocol.clips,
            "cls_token": "treated like any token by the cacher; dropped after the tower",
            "stc": asdict(self.stc),
            "stop_ids": sorted(self.stop_ids),
            "manifest": self.net.manifest,
        }

    @torch.inference_mode()
    def reset(self) -> None:
        self.frames: list[torch.Tensor] = []  # question: the squashed frames held, uint8 [side, side, 3]
        self.times: list[float] = []
        self.loops: dict[str, _Loop] = {}  # per question: the proactive loop over the stored clips
        self.perception.reset()

    @torch.inference_mode()
    def add_frames(self, frames: torch.Tensor, times: tuple[float, ...]) -> Step:
        step = Step()
        frames = self.perception.squash(frames)
        if self.protocol.clips == "question":  # clips are rebuilt per question from these
            self.frames.extend(frames.cpu())
        else:
            self.perception.add(frames, times, step)
        self.times.extend(times)
        return step

    @torch.inference_mode()
    def answer(self, query: Query) -> Answer:
        if not self.times:
            raise ValueError(f"{query.id}: no frames in its window to answer from")
        answer = Answer(model_input=query.prompt, retrieval_input=query.prompt)
        with timed(answer, "answer", self.device):
            clips, frame_times = self._clips(answer)
            selected, state = self.query_state(clips, query.prompt, answer)
            before, after = reaction_prompt(query.prompt)
            answer.model_input = f"{before}<visual: clips {', '.join(map(str, selected))}>{after}"
            with timed(answer, "prefill", self.device):
                visual = self.reaction_tokens(clips, selected, state["global"])
                embeds = torch.cat([self._embed(before), visual, self._embed(after)])[None]
                hidden, cache = prefill_cache(self.net.reaction, embeds)
            tokens = greedy_on_cache(
                self.net.reaction,
                hidden[0, -1],
                cache,
                embeds.shape[1],
                self.protocol.max_new_tokens,
                self.stop_ids,
            )
        answer.text = self.net.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        answer.frame_times = frame_times
        count(answer, "clips", len(clips))
        count(answer, "reaction_visual_tokens", len(visual))
        count(answer, "new_tokens", len(tokens))
        return answer

    def _clips(self, step: Step) -> tuple[list[Clip], tuple[float, ...]]:
        """The clips a question reads and the times of their frames."""
        per_clip = self.net.frames_per_clip
        if self.protocol.clips == "video":
            clips = self.perception.clips(step)
            return clips, tuple(self.times)
        # Dispider's wrapper: clamp(round(duration / 16), 1, 100) clips over the clip it is given
        duration = len(self.frames) / self.protocol.fps
        wanted = per_clip * clip_count(duration, self.protocol.max_clips, per_clip)
        picked = sample_indices(len(self.frames), wanted)
        self.perception.reset()  # per question: a fresh cacher reference and pruner state, as upstream
        frames = torch.stack([self.frames[i] for i in picked])
        times = tuple(self.times[i] for i in picked)
        self.perception.add(frames, times, step)  # whole clips: nothing is left pending
        return list(self.perception.stored), times

    def query_state(self, clips: list[Clip], question: str, step: Step) -> tuple[list[int], dict]:
        """The decision sequence's last state over ``clips`` with no answer so far, the clips it retrieves,
        and the global memory G (the compact model's states at the time positions of
        ``[M_1..M_n ; tau_1..tau_n]``)."""
        with timed(step, "decision", self.device):
            parts = self._parts(question)
            memories = [clip.memory for clip in clips]
            sequence = self._sequence(decision_layout(len(clips)), parts, memories, [])
            last = self.net.compact(inputs_embeds=sequence[None]).last_hidden_state[0, -1]
            times = torch.stack([clip.time for clip in clips])
            joined = torch.cat([*memories, times])[None]
            global_memory = self.net.compact(inputs_embeds=joined).last_hidden_state[0, -len(clips) :]
        return retrieve(last, times), {"query": last, "global": global_memory}

    @torch.inference_mode()
    def decide(self, question: str) -> tuple[list[int], list[float]]:
        """Dispider's proactive loop over the clips perceived so far (modeling_qwen.py:1276-1307): after each
        clip i the decision sequence's silent-head logit; > 0 triggers an answer at i and summarises the
        segment since the last one. Returns the 1-based clip counts that triggered and every logit."""
        loop = _Loop(self._parts(question))
        self._advance(loop, self.perception.clips(Step()))
        return loop.triggers, loop.logits

    @torch.inference_mode()
    def wants_to_answer(self, query: Query) -> bool:
        """Whether the clip the last frame completed triggers an answer to ``query`` (its question posed at
        the stream's start, as [D] inserts it at position 0); False between clip boundaries, where Dispider
        decides nothing. Each question's loop is kept and advanced over the clips stored since, so a
        stream of N clips costs the N decision passes of the released loop, not N per call."""
        stored = self.perception.stored
        if self.perception.pending or not stored:
            return False
        if query.prompt not in self.loops:
            self.loops[query.prompt] = _Loop(self._parts(query.prompt))
        loop = self.loops[query.prompt]
        self._advance(loop, stored)
        return loop.triggers[-1:] == [len(stored)]

    def _advance(self, loop: _Loop, clips: list[Clip]) -> None:
        """Run ``loop`` over the clips of ``clips`` after those it has decided on."""
        memories = [clip.memory for clip in clips]
        for i in range(len(loop.logits) + 1, len(clips) + 1):
            layout = decision_layout(i, tuple(loop.triggers))
            sequence = self._sequence(layout, loop.parts, memories, loop.summaries)
            last = self.net.compact(inputs_embeds=sequence[None]).last_hidden_state[0, -1]
            logit = float(self.net.silent(last)[0])
            loop.logits.append(logit)
            if logit > 0:
                loop.triggers.append(i)
                span = segments(tuple(loop.triggers))[-1]
                rows = torch.cat([*(memories[c] for c in span), *(clips[c].time[None] for c in span)])
                summary = self.net.compact(inputs_embeds=rows[None]).last_hidden_state[0, -len(span) :]
                loop.summaries.append(summary)

    def _parts(self, question: str) -> dict[str, torch.Tensor]:
        """Embeddings of ``<has_answer>``, the question tokenised with ``<to_do>`` after it, and ``<to_do>``
        (compact tokenizer; inference.py:129-135, 224-225)."""

        def embed(text: str) -> torch.Tensor:
            ids = self.net.compact_tokenizer(text, add_special_tokens=False).input_ids
            return self.net.compact.embed_tokens(torch.tensor(ids, device=self.device))

        return {"ANS": embed("<has_answer>"), "Q": embed(f"{question}<to_do>"), "TODO": embed("<to_do>")}

    @staticmethod
    def _sequence(layout, parts, memories, summaries) -> torch.Tensor:
        pieces = {"M": memories, "S": summaries}
        return torch.cat([parts[name] if index is None else pieces[name][index] for name, index in layout])

    def reaction_tokens(
        self, clips: list[Clip], selected: list[int], global_memory: torch.Tensor
    ) -> torch.Tensor:
        """Per retrieved clip in time order ``clip_projector(its kept CLIP tokens)``, ``compress_projector(its
        memory)``; then ``compress_projector(G)`` ([D] long_arch.py:104-134)."""
        out = []
        for c in selected:
            out += [
                self.net.clip_projector(clips[c].reaction_tokens()),
                self.net.compress_projector(clips[c].memory),
            ]
        return torch.cat([*out, self.net.compress_projector(global_memory)])

    def _embed(self, text: str) -> torch.Tensor:
        ids = self.net.tokenizer(text, add_special_tokens=False).input_ids
        return self.net.reaction.model.embed_tokens(torch.tensor(ids, device=self.device, dtype=torch.long))


def stc_settings(config, resolution: int) -> STCSettings:
    """``config``'s STC part with Dispider's defaults where a flag is unset: interval 4 and ratio 0.25,
    20 of 64 mixed tokens (the share STC keeps of LLaVA-OV's 196)."""
    return STCSettings.from_config(
        config,
        round(resolution * SHARE),
        default_interval=STC_DISPIDER["cache_interval"],
        default_ratio=STC_DISPIDER["update_ratio"],
    )


def build(config, protocol: Protocol, device, dtype) -> Dispider:
    """``stc eval --model dispider``: the checkpoint of ``config.model_path`` (default Mar2Ding/Dispider)."""
    net = dispider_load.load(
        config.model_path or dispider_load.DEFAULT_CHECKPOINT, device=device, dtype=dtype
    )
    return Dispider(net, stc_settings(config, net.resolution), protocol)


__all__ = ["Dispider", "build"]
