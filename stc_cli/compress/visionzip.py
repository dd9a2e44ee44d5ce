"""VisionZip (CVPR 2025), per frame, on the layer a VLM reads its features from, in plain torch.

Follows [VZ] github dvlab-research/VisionZip at 3151f6d: the selection in ``visionzip/clip_encoder.py:42-83``,
the metric (that layer's keys averaged over heads, ``visionzip/utils.py:23-24,89``, kept at ``:122-124``
for layer -2 only, ``:191``) and the defaults (``visionzip/main.py:5-7``: ``dominant`` counts the CLS).

1. Dominant: the ``dominant`` tokens with the highest score, in index order.
2. Of the ``R`` others (index order), ``contextual`` targets at positions ``0, s, 2s, ...`` with
   ``s = max(1, R // contextual)`` (``clip_encoder.py:67-68``); every other one (the tail past the last
   target too) goes to the target of highest cosine on the L2-normalised metric, first on ties.
3. A contextual token is the target's hidden state PLUS the mean of those assigned to it (zero if none,
   ``clip_encoder.py:75-80``). Output: dominant then contextual tokens.

Scores (``attention_stats``): ``cls=True`` is upstream's CLIP path, the CLS query's attention row summed over
heads (``clip_encoder.py:51-52``); the CLS itself gets +inf so it is always kept, as upstream adds it to the
dominant set. ``cls=False`` is "SigLIP mean-attention VisionZip", our adaptation for towers without a CLS:
a token's score is the attention it receives, softmax over keys, averaged over heads and all queries.
Both come from the layer's own q/k projections (transformers 5.x SDPA returns no attention weights, and
switching the tower to eager would slow every layer), so run the tower once with ``output_hidden_states``
and call ``attention_stats`` on the feature layer and its input, then compress that layer's output, as
upstream does (``clip_encoder.py:43-45``: LLaVA-1.5 reads layer -2, so ``attention_stats(layers[-2],
hidden_states[-3])`` and ``hidden_states[-2]``; LLaVA-OneVision reads the last layer, ``models/llava_ov.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

VIDEO_RATIO = (54, 10)  # upstream's 64-token example (README.md:127-128), the harness's per-frame default


def target_positions(rest: int, contextual: int) -> torch.Tensor:
    """Upstream's evenly spaced targets among ``rest`` tokens: a stride of ``rest // contextual``, so any
    remainder is left at the tail (``clip_encoder.py:67-68``)."""
    return torch.arange(0, rest, max(1, rest // contextual))[:contextual]


class VisionZip:
    """Keep ``dominant`` tokens by score and merge the rest into ``contextual`` tokens, per frame.

    Example:
        >>> tokens = VisionZip(54, 10).compress(hidden, *attention_stats(layer, hidden_in))  # [F, 64, C]
    """

    def __init__(self, dominant: int = VIDEO_RATIO[0], contextual: int = VIDEO_RATIO[1]):
        if dominant < 0 or contextual < 0 or dominant + contextual < 1:
            raise ValueError(f"VisionZip needs counts >= 0 keeping >= 1 token, got {dominant} + {contextual}")
        self.dominant, self.contextual = int(dominant), int(contextual)
        self.last_indices: torch.Tensor | None = None  # [F, dominant] of the latest compress, ascending

    def reset(self) -> None:
        """Nothing to forget: each frame is compressed on its own."""

    @classmethod
    def at_budget(cls, budget: int) -> VisionZip:
        """Upstream's 54:10 split (its README example) at another total; Python's round: 16 -> 14 + 2."""
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"VisionZip budget must be an int >= 1, got {budget!r}")
        contextual = round(budget * VIDEO_RATIO[1] / sum(VIDEO_RATIO))
        if budget >= 2:
            contextual = max(contextual, 1)  # the merged context is the method's point; keep one
        return cls(budget - contextual, contextual)

    def compress(self, hidden: torch.Tensor, scores: torch.Tensor, metric: torch.Tensor) -> torch.Tensor:
        """``hidden [F, N, C]``, ``scores [F, N]``, ``metric [F, N, K]`` -> ``[F, dominant + contextual, C]``;
        ``last_indices`` then holds the dominant indices."""
        shapes = tuple(hidden.shape), tuple(scores.shape), tuple(metric.shape)
        if len(shapes[0]) != 3 or len(shapes[2]) != 3 or not shapes[1] == shapes[0][:2] == shapes[2][:2]:
            raise ValueError(
                f"VisionZip needs hidden [F, N, C], scores [F, N], metric [F, N, K]; got {shapes}"
            )
        frames, n, _ = hidden.shape
        if self.dominant + self.contextual > n:
            raise ValueError(f"VisionZip keeps {self.dominant} + {self.contextual} tokens of only {n}")
        kept = torch.zeros(frames, n, dtype=torch.int8, device=hidden.device)
        kept.scatter_(1, scores.topk(self.dominant, dim=1).indices, 1)
        # A stable sort of the kept flags lists the others, then the dominant, each in index order.
        order = kept.argsort(dim=1, stable=True)
        rest = n - self.dominant
        self.last_indices = order[:, rest:]
        dominant = take(hidden, self.last_indices)
        if self.contextual == 0:
            return dominant
        rest_hidden = take(hidden, order[:, :rest])
        rest_metric = F.normalize(take(metric, order[:, :rest]), dim=-1)
        targets = target_positions(rest, self.contextual).to(hidden.device)
        is_target = torch.zeros(rest, dtype=torch.bool, device=hidden.device)
        is_target[targets] = True
        others = (~is_target).nonzero().squeeze(1)
        similarity = rest_metric[:, others] @ rest_metric[:, targets].transpose(1, 2)  # [F, others, targets]
        assign = F.one_hot(similarity.argmax(dim=2), self.contextual).to(hidden.dtype)
        counts = assign.sum(dim=1).clamp(min=1).unsqueeze(-1)  # an empty target adds 0, not 0 / 0
        merged = assign.transpose(1, 2) @ rest_hidden[:, others] / counts
        return torch.cat([dominant, rest_hidden[:, targets] + merged], dim=1)


def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x [F, N, C]`` at ``idx [F, M]`` -> ``[F, M, C]``."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


@torch.no_grad()
def attention_stats(layer: torch.nn.Module, hidden_in: torch.Tensor, cls: bool = False):
    """Scores ``[F, T]`` and metric ``[F, T, head_dim]`` of a pre-LN CLIP/SigLIP encoder ``layer`` whose
    input is ``hidden_in [F, T, C]``: the attention each token receives (``cls=False``) or the CLS row
    summed over heads with the CLS at +inf (``cls=True``); the metric is the keys averaged over heads."""
    attn = layer.self_attn
    x = layer.layer_norm1(hidden_in)
    frames, tokens, _ = x.shape
    q = attn.q_proj(x).view(frames, tokens, -1, attn.head_dim).transpose(1, 2)  # [F, H, T, d]
    k = attn.k_proj(x).view(frames, tokens, -1, attn.head_dim).transpose(1, 2)
    # Softmax in float32: a score is a mean over hundreds of queries, which half precision would blur.
    probs = torch.softmax((q.float() * attn.scale) @ k.float().transpose(-1, -2), dim=-1)  # [F, H, T, T]
    return scores_from_attention(probs, cls), k.mean(dim=1)


def scores_from_attention(probs: torch.Tensor, cls: bool = False) -> torch.Tensor:
    """Scores ``[F, T]`` from attention probabilities ``[F, H, queries, keys]``, see ``attention_stats``."""
    if not cls:
        return probs.mean(dim=(1, 2))  # attention received, over heads and queries
    scores = probs[:, :, 0].sum(dim=1)
    scores[:, 0] = float("inf")  # upstream ranks the patches and adds the CLS on top (clip_encoder.py:53-54)
    return scores
