"""``stc bench --dispider N``: STC's two places in Dispider over N streamed frames, at the widths of its
``random:full`` model (``models/dispider_load.py``): the perception CLIP-L/14 at 224 px (256 patches + CLS),
one frame per call, stock vs STC-Cacher at Dispider's settings (interval 4, ratio 0.25); then the reaction
LLM's prefill of a frame's 64 mixed CLIP tokens vs the 20 STC-Pruner keeps (60 / 196 of them), each with
the frame's memory slots, as ``Dispider.reaction_tokens`` feeds them. STC leaves the compact model, the
decision path and the slots as they are: they are not timed."""

from __future__ import annotations

import copy

import torch

from stc_cli.bench.inputs import synthetic_video
from stc_cli.bench.prefill import prefill_stream
from stc_cli.bench.timer import Timer
from stc_cli.bench.vit import prune_stage
from stc_cli.compress import STCCacher, STCPruner
from stc_cli.configs import BenchConfig
from stc_cli.models.dispider import SHARE, STC_DISPIDER
from stc_cli.models.dispider_config import CLIP_L14
from stc_cli.models.dispider_glue import mix_2x2, mlp2x_gelu
from stc_cli.models.dispider_load import RANDOM_PRESETS, SELECT_LAYER
from stc_cli.models.presets import seeded


def dispider_stage(config: BenchConfig, timer: Timer, llm, layers: int | None) -> dict:
    """``llm``, the run's LLM, is the reaction model (``--llm``'s default, qwen2-7b, is Dispider's); the
    tiny presets of the tests get Dispider's ``random:tiny`` tower."""
    frames, device, dtype = config.dispider, llm.device, llm.dtype
    preset = "tiny" if config.vision == "tiny" else "full"
    vision, _, _, _, pool_num, _ = RANDOM_PRESETS[preset]
    stock = _tower(vision, layers, config.seed, device, dtype)
    patched = copy.deepcopy(stock)  # the same weights; only this copy gets the cacher
    cacher = STCCacher(STC_DISPIDER["update_ratio"], STC_DISPIDER["cache_interval"]).attach(patched)
    timer = timer.with_chunks(frames)  # N frames, not --frames
    pixels = synthetic_video(frames, stock.config.image_size, config.seed).to(device, dtype).split(1)
    mixed: list[torch.Tensor] = []  # the STC pass's [1, 64, 4C] per frame, fed to the pruner

    def encode(tower, i: int) -> torch.Tensor:
        # Perception.add's "vit" span: the tower, the selected layer without CLS, the 2x2 mixing
        states = tower(pixel_values=pixels[i], output_hidden_states=True).hidden_states
        return mix_2x2(states[SELECT_LAYER][:, 1:])

    def vit_steps():
        cacher.reset()
        mixed.clear()
        return {"full": lambda i: encode(stock, i), "stc": lambda i: mixed.append(encode(patched, i))}

    vit_ms = timer.compare(vit_steps, stage="dispider_vit_")
    cacher.detach()
    tokens = mixed[0].shape[1]
    prune_ms, kept = prune_stage(timer, STCPruner(round(tokens * SHARE)), mixed, stage="dispider_")
    projector, slots = _reaction_inputs(mixed[0].shape[-1], llm, pool_num, config.seed)
    fed: dict[str, int] = {}  # visual tokens per frame that reach the reaction LLM, per side

    def prefill_steps():
        def capacity(frames: list[torch.Tensor]) -> int | None:  # --llm-graphs: static caches
            return sum(f.shape[1] + slots.shape[1] for f in frames) if config.llm_graphs else None

        streams = {
            "full": prefill_stream(llm, capacity(mixed)),
            "pruned": prefill_stream(llm, capacity(kept)),
        }

        def step(side: str, frame: torch.Tensor) -> None:
            # the projection is inside Dispider's timed prefill too (Dispider.answer)
            embeds = torch.cat([projector(frame), slots], dim=1)
            fed[side] = embeds.shape[1]
            streams[side](embeds)

        return {"full": lambda i: step("full", mixed[i]), "pruned": lambda i: step("pruned", kept[i])}

    prefill_ms = timer.compare(prefill_steps, stage="dispider_prefill_")
    return {
        "frames": frames,
        "preset": f"random:{preset}",
        "vit_layers": stock.config.num_hidden_layers,
        "vit_tokens_per_frame": (stock.config.image_size // stock.config.patch_size) ** 2 + 1,  # with CLS
        "interval": cacher.interval,
        "update_ratio": cacher.update_ratio,
        "vit_full_ms_per_frame": vit_ms["full"],
        "vit_stc_ms_per_frame": vit_ms["stc"],
        "vit_ratio": vit_ms["stc"] / vit_ms["full"],
        "pruner_ms_per_frame": prune_ms,
        "pruner_share_of_stc_vit": prune_ms / vit_ms["stc"],
        "tokens_per_frame": tokens,
        "kept_tokens_per_frame": kept[0].shape[1],
        "memory_tokens_per_frame": pool_num,
        "reaction_tokens_full": fed["full"],
        "reaction_tokens_pruned": fed["pruned"],
        "llm": config.llm,
        "llm_layers": llm.config.num_hidden_layers,
        "prefill_full_ms_per_frame": prefill_ms["full"],
        "prefill_pruned_ms_per_frame": prefill_ms["pruned"],
        "prefill_ratio": prefill_ms["pruned"] / prefill_ms["full"],
    }


def _tower(vision: dict, layers: int | None, seed: int, device, dtype):
    """The perception CLIP tower of the preset, as ``build_random`` makes it, cut to ``layers``."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(**{**CLIP_L14, **vision})
    config.num_hidden_layers = min(layers or config.num_hidden_layers, config.num_hidden_layers)
    with seeded(seed, device):
        return CLIPVisionModel(config).to(dtype).eval()


def _reaction_inputs(width: int, llm, pool_num: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """Dispider's ``clip_projector`` (4C -> D) with seeded random weights, and a frame's ``pool_num``
    memory slots as the reaction LLM reads them (already projected: the same on both sides)."""
    hidden = llm.config.hidden_size
    with seeded(seed, llm.device):
        projector, slots = mlp2x_gelu(width, hidden), torch.randn(1, pool_num, hidden)
    return projector.to(llm.dtype).eval(), slots.to(llm.dtype)
