"""ReKV on LLaVA-OneVision, with STC: the ``VideoModel`` behind ``stc eval --model rekv``.

Per frame (one frame per chunk, so that the cacher alternates reference and selective chunks, as STC
runs it; ``--encode-chunk`` batches more): SigLIP (STC-Cacher on every layer) -> projector -> 2x2
bilinear pooling (196 tokens, no newline token) -> STC-Pruner (k tokens) -> the LLM, whose attention is
ReKV's memory (``rekv_lm.py``, ``rekv_memory.py``), one block per frame. The protocol
(``stc_cli/protocols``) says which text retrieves frames, which is prefilled and how the answer is
decoded. The baselines of ``--compress`` take the cacher's place (ToMe) or the pruner's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from stc_cli.accel import TowerGraphs, compile_layers
from stc_cli.benchmarks.base import Query
from stc_cli.compress import DifferentialTokenDrop, STCPruner, ToMe, VidCom2, VisionZip
from stc_cli.models import llava_ov
from stc_cli.models.base import (
    STC_DEFAULTS,
    Answer,
    STCSettings,
    Step,
    clean_up_spaces,
    count,
    stop_ids,
    timed,
)
from stc_cli.models.llava_ov import LlavaOV
from stc_cli.models.rekv_lm import ReKVLanguageModel
from stc_cli.protocols import Protocol, resolve

INIT_PROMPT = "<|im_start|>system \nYou are a helpful assistant.<|im_end|><|im_start|>user "
CHAT_TURN = "\n{prompt}<|im_end|><|im_start|>assistant\n"  # [STC] llava_onevision_rekv.py:32-36 get_prompt
CHOICE_PREFILL = "Best option: ("  # its assistant prefill for multiple choice
TEMPLATES = ("plain", "rekv-chat")


@dataclass(frozen=True)
class ReKVSettings:
    n_local: int = 15000  # tokens of the sliding window
    topk: int = 64  # frames retrieved per layer for a question
    last_frames: int | None = None  # --compress lastn: answer from the last N frames instead (SimpleStream)
    encode_chunk: int = 1  # frames per vision-tower call and prefill (--encode-chunk)
    max_blocks: int | None = None  # blocks kept for retrieval, the newest (--max-blocks); None: every one
    cuda_graphs: bool = True  # on CUDA, replay the vision tower (stock, STC-Cacher or ToMe) from CUDA graphs
    # on CUDA, each frame's prefill and each generated token on fixed buffers, replayed from CUDA graphs
    # (not yet run on a GPU)
    llm_graphs: bool = False
    compile: bool = False  # the vision tower's layers through torch.compile (stock and STC-Cacher)


class ReKV:
    """The ``VideoModel`` (``models/base.py``): ``add_frames`` encodes frames into ReKV's memory with STC
    as ``stc`` says, ``answer`` retrieves, prefills and decodes without changing that memory."""

    def __init__(
        self,
        llava: LlavaOV,
        stc: STCSettings = STC_DEFAULTS,
        rekv: ReKVSettings = ReKVSettings(),
        protocol: Protocol | None = None,  # None: the default on OVO-Bench, the STC online harness's
    ):
        protocol = protocol or resolve("rekv", "ovo")
        if protocol.template not in TEMPLATES or protocol.decoding != "greedy" or protocol.retrieval is None:
            raise ValueError(f"protocol {protocol.name} ({protocol.model}) does not fit ReKV")
        self.llava, self.stc, self.settings, self.protocol = llava, stc, rekv, protocol
        model = llava.model
        self.vision, self.lm = model.model.vision_tower, model.model.language_model
        self.device = next(model.parameters()).device
        pooled = llava.tokens_per_frame
        if (stc.pruner or stc.tome) and not 1 <= stc.tokens_per_frame <= pooled:
            raise ValueError(f"--tokens-per-frame must be between 1 and {pooled}, got {stc.tokens_per_frame}")
        # the budget per frame, and the most tokens a frame's block may hold: STC-Pruner and VisionZip keep
        # exactly the budget, VidCom² (over several frames) and DTD a variable number
        self.budget = stc.tokens_per_frame if stc.pruner else pooled
        self.block = self.budget if stc.pruner_method in ("stc", "visionzip") else pooled
        if rekv.compile and stc.tome:
            raise ValueError("--compile compiles the stock or STC-Cacher tower's layers, not ToMe's")
        self.cacher = stc.attach_cacher(self.vision, compile=rekv.compile)
        if rekv.compile and not stc.cacher:
            compile_layers(self.vision)  # the same compiled layer as the cacher's reference chunks
        self.tome = _tome(llava, stc).attach(self.vision) if stc.tome else None
        self.tower = TowerGraphs(llava.run_tower, self.cacher) if rekv.cuda_graphs else llava.run_tower
        self.pruner = _pruner(stc, pooled) if stc.pruner else None
        self.stop_ids = stop_ids(llava.tokenizer, protocol.stop)
        self.llm = ReKVLanguageModel(
            self.lm,
            model.lm_head,
            n_local=rekv.n_local,
            block=self.block,
            topk=rekv.last_frames or rekv.topk,
            recent=rekv.last_frames is not None,
            source=llava.source,
            cuda_graphs=rekv.llm_graphs and self.device.type == "cuda",
            max_blocks=rekv.max_blocks,
        )
        self.reset()

    def describe(self) -> dict:
        """Every knob that moves a score or a timing, for run.json."""
        return {
            "model": "rekv",
            "model_path": self.llava.source,
            "dtype": str(self.lm.dtype).removeprefix("torch."),
            "frame_size": list(self.llava.transform.size),
            "tokens_per_frame": self.budget,
            "stc": asdict(self.stc),
            "tome_r": self.tome.r if self.tome else None,
            "rekv": asdict(self.settings),
            "stop_ids": sorted(self.stop_ids),
        }

    @torch.inference_mode()
    def reset(self) -> None:
        self.llm.reset()
        if self.cacher:
            self.cacher.reset()
        if self.pruner and (self.stc.pruner_memory == "video" or self.stc.pruner_method != "stc"):
            self.pruner.reset()  # only STC-Pruner's memory may be kept for the process (as released)
        self.llm.encode(self._embed(INIT_PROMPT))

    @torch.inference_mode()
    def add_frames(self, frames: torch.Tensor, times: tuple[float, ...]) -> Step:
        step = Step()
        for start in range(0, len(frames), self.settings.encode_chunk):
            chunk = frames[start : start + self.settings.encode_chunk]
            with timed(step, "vit", self.device):
                states = self.tower(self.llava.pixels(chunk))
                features = self.llava.project(states)  # [F, 196, hidden]
            kept = list(features)
            if self.pruner:
                with timed(step, "compress", self.device):
                    kept = self._prune(features, states)
            kept = [tokens for tokens in kept if len(tokens)]  # a frame DTD drops whole leaves no block
            if kept:
                with timed(step, "prefill", self.device):
                    self.llm.encode(torch.cat(kept)[None], sizes=[len(tokens) for tokens in kept])
            count(step, "frames_encoded", len(chunk))
            count(step, "visual_tokens_in", self.llava.tokens_per_frame * len(chunk))
            count(step, "visual_tokens_kept", sum(len(tokens) for tokens in kept))
        return step

    @torch.inference_mode()
    def answer(self, query: Query) -> Answer:
        """Retrieve frames with one text, prefill another, decode greedily (the protocol says which)."""
        answer = Answer()
        answer.retrieval_input, answer.model_input = texts(self.protocol, query)
        tokens: list[int] = []
        try:
            with timed(answer, "answer", self.device):
                prompt = self._embed(answer.model_input)
                room = prompt.shape[1] + self.protocol.max_new_tokens
                self.llm.retrieve(self._embed(answer.retrieval_input), room)
                logits = self.llm.extend(prompt)
                while True:
                    ranked = logits.topk(2).indices.tolist()
                    # STC's tweak of ReKV: an end token as the very first token gives way to the second best
                    first_rule = self.protocol.first_token_rule and not tokens and ranked[0] in self.stop_ids
                    token = ranked[1] if first_rule else ranked[0]
                    if token in self.stop_ids:
                        break
                    tokens.append(token)
                    if len(tokens) == self.protocol.max_new_tokens:
                        break
                    logits = self.llm.extend(self.lm.embed_tokens(self._ids([token])))
        finally:
            self.llm.end_answer()
        answer.text = self.llava.tokenizer.decode(tokens, skip_special_tokens=True)
        if self.protocol.cleanup:
            answer.text = clean_up_spaces(answer.text)
        count(answer, "new_tokens", len(tokens))
        return answer

    def _prune(self, features: torch.Tensor, states: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """The tokens the pruner keeps of each frame of one chunk ``[F, P, D]``, in order: STC-Pruner and
        VisionZip as many of every frame, VidCom² and DTD their own choice per frame (``select``)."""
        if isinstance(self.pruner, STCPruner):
            return list(self.pruner.compress(features)[0])
        if isinstance(self.pruner, VisionZip):
            return list(self.pruner.compress(features, *self.llava.feature_attention(states)))
        return [frame[idx] for frame, idx in zip(features, self.pruner.select(features), strict=True)]

    def _ids(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], device=self.device)

    def _embed(self, text: str) -> torch.Tensor:
        ids = self.llava.tokenizer(text, add_special_tokens=False).input_ids
        return self.lm.embed_tokens(self._ids(ids))


def _pruner(stc: STCSettings, pooled: int) -> STCPruner | VidCom2 | VisionZip | DifferentialTokenDrop:
    """STC-Pruner, or a baseline in its place at the same budget (``--compress``): VidCom², whose "video"
    centre is the encode chunk's (one frame by default, so it keeps ``tokens_per_frame`` of every frame);
    VisionZip on the pooled grid (dominant + contextual = ``tokens_per_frame``, upstream's 54:10 split);
    or TimeChat-Online's DTD, keeping ``tokens_per_frame`` of every frame but the first, or dropping by
    ``dtd_threshold``."""
    if stc.pruner_method == "visionzip":
        return VisionZip.at_budget(stc.tokens_per_frame)
    if stc.pruner_method == "vidcom2":
        return VidCom2(base_scale=stc.tokens_per_frame / pooled)
    if stc.pruner_method == "dtd":
        if stc.dtd_threshold is not None:
            return DifferentialTokenDrop(stc.dtd_threshold)
        return DifferentialTokenDrop(None, keep=stc.tokens_per_frame)
    return stc.stc_pruner()


def _tome(llava: LlavaOV, stc: STCSettings) -> ToMe:
    """ToMe for LLaVA-OV's tower: ``tome_r`` per layer, or the schedule that leaves STC's share of the
    patches (223 of 729 for 60 of 196), unmerged at the output, which must be the feature layer."""
    vision = llava.model.config.vision_config
    if llava.model.config.vision_feature_layer != -1:
        raise ValueError("--compress tome needs a checkpoint that reads the vision tower's last layer")
    if stc.tome_r is not None:
        return ToMe(stc.tome_r)
    patches = (vision.image_size // vision.patch_size) ** 2
    keep = round(patches * stc.tokens_per_frame / llava.tokens_per_frame)
    return ToMe(ToMe.schedule(patches, vision.num_hidden_layers, keep))


def texts(protocol: Protocol, query: Query) -> tuple[str, str]:
    """``(retrieval text, prefill text)`` of ``query`` under ``protocol``: the prompt as it is
    (``plain``), or in a chat turn ending with "Best option: (" for multiple choice (``rekv-chat``);
    the bare question retrieves where the protocol says so."""
    prefill = query.prompt
    if protocol.template == "rekv-chat":
        prefill = CHAT_TURN.format(prompt=query.prompt) + (CHOICE_PREFILL if query.options else "")
    if protocol.retrieval == "prompt":
        return query.prompt, prefill
    if not query.question:
        raise ValueError(f"{query.id} has no bare question to retrieve frames with")
    return query.question, prefill


def build(config, protocol: Protocol, device, dtype) -> ReKV:
    """``stc eval --model rekv``: the LLaVA-OneVision checkpoint of ``config.model_path`` with ReKV."""
    default = "demo" if config.bench == "demo" else llava_ov.DEFAULT_CHECKPOINT  # the packaged demo model
    llava = llava_ov.load(config.model_path or default, device=device, dtype=dtype)
    # STC keeps 60 of LLaVA-OV's 196 tokens per frame; other grids (random:tiny's 16) keep the same share
    stc = STCSettings.from_config(config, round(llava.tokens_per_frame * STCSettings.tokens_per_frame / 196))
    settings = ReKVSettings(
        n_local=config.n_local,
        topk=config.topk,
        last_frames=config.last_frames if config.compress == "lastn" else None,
        encode_chunk=config.encode_chunk,
        max_blocks=config.max_blocks,
        cuda_graphs=config.cuda_graphs,
        llm_graphs=config.llm_graphs,
        compile=config.compile,
    )
    return ReKV(llava, stc, settings, protocol)
