"""``stc bench --compress``: the pre-prefill baselines beside STC-Pruner, on the same pooled frames at the
same budget (``--tokens-per-frame``), interleaved chunk by chunk. ToMe, which acts inside the ViT, is timed
in the ViT stage (``vit.py``) beside the stock tower and the cacher."""

from __future__ import annotations

import torch

from stc_cli.bench.inputs import pool_grid
from stc_cli.bench.timer import Timer
from stc_cli.compress import DifferentialTokenDrop, STCPruner, ToMe, VidCom2, VisionZip
from stc_cli.compress.visionzip import attention_stats

BASELINES = ("tome", "vidcom2", "visionzip", "dtd")
PRUNER_BASELINES = BASELINES[1:]


def tome_for(tokens: int, layers: int, pooled: int, kept: int) -> ToMe:
    """ToMe leaving STC's share of the ViT tokens (223 of 729 for 60 of 196), as ``stc eval`` runs it."""
    keep = round(tokens * kept / pooled)
    try:
        return ToMe(ToMe.schedule(tokens, layers, keep))
    except ValueError as error:
        raise ValueError(f"--compress tome with {layers} ViT layers: {error}; give more --layers") from None


def baselines_stage(
    timer: Timer, methods: tuple[str, ...], tokens_per_frame: int, pooled: list, last_layer, last_inputs: list
) -> dict:
    """ms per frame of STC-Pruner and each pre-prefill baseline in ``methods``, and the tokens each keeps
    per frame (mean over the timed frames). VisionZip's cost includes its attention statistics of the
    tower's last layer (``last_layer`` on its inputs ``last_inputs``, one per frame), pooled to the grid."""
    total = pooled[0].shape[1]
    kept: dict[str, list[int]] = {}

    def visionzip(zipper: VisionZip, i: int) -> list[torch.Tensor]:
        scores, metric = attention_stats(last_layer, last_inputs[i])
        return list(zipper.compress(pooled[i], pool_grid(scores[..., None])[..., 0], pool_grid(metric)))

    def steps():
        kept.clear()
        stc, vidcom2 = STCPruner(tokens_per_frame), VidCom2(base_scale=tokens_per_frame / total)
        zipper, dtd = (
            VisionZip.at_budget(tokens_per_frame),
            DifferentialTokenDrop(None, keep=tokens_per_frame),
        )
        every = {
            "stc": lambda i: list(stc.compress(pooled[i])[0]),
            "vidcom2": lambda i: vidcom2.select(pooled[i]),
            "visionzip": lambda i: visionzip(zipper, i),
            "dtd": lambda i: dtd.select(pooled[i]),
        }
        names = ("stc", *(m for m in methods if m in PRUNER_BASELINES))
        return {name: _counted(every[name], kept.setdefault(name, []), timer.warmup) for name in names}

    ms = timer.compare(steps, stage="baseline_")
    return {
        name: {"ms_per_frame": ms[name], "kept_tokens": sum(counts) / len(counts)}
        for name, counts in kept.items()
    }


def _counted(step, counts: list[int], warmup: int):
    """``step``, recording the tokens it kept of each timed frame."""

    def run(i: int) -> None:
        out = step(i)
        if i >= warmup:
            counts.append(sum(len(frame) for frame in out))

    return run
