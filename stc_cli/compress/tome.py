"""ToMe (Token Merging, Bolya et al., ICLR'23) inside a SigLIP / CLIP vision tower, unmerged at the output.

Variant: ViT-internal ToMe as in the authors' code (facebookresearch/ToMe, ``tome/merge.py`` and
``tome/patch/timm.py``). Every encoder layer attends over its current tokens with *proportional attention*
(``log(size)`` of each key added to the logits), adds the attention branch, merges ``r`` tokens by bipartite
soft matching on the layer's keys averaged over heads (size-weighted means), then runs its MLP on the merged
tokens. After the last layer every original patch position gets a copy of the token it was merged into, so
the tower still returns the full ``[F, T, C]`` grid and LLaVA-OneVision's 2x2 pooling still applies: this
saves ViT time, not LLM prefill.

This is not STC's own ToMe baseline: the STC repo's ``model/experiment/tome.py`` runs a one-shot, per-frame
bipartite merge *after* the encoder (r = N/3) and feeds fewer tokens to the LLM. The config behind the STC
README's ToMe row (a 32% ViT latency cut, which implies some ViT-internal variant) was not released.

``output_hidden_states``: transformers 5.x records them with forward hooks on the encoder layers, so the
tuple holds the embeddings (full length), then each layer's output as the layer returns it: *merged*,
``tokens[i]`` long, for every layer but the last, and the last one unmerged (full length; before SigLIP's
post-layernorm). Code reading an intermediate layer (e.g. ``vision_feature_layer=-2``) gets merged tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stc_cli.compress.cacher_family import gather_rows

_PARTS = ("layer_norm1", "self_attn", "layer_norm2", "mlp")
_ATTENTION_PARTS = ("q_proj", "k_proj", "v_proj", "out_proj", "head_dim", "scale")


def bipartite_merge(
    x: torch.Tensor, metric: torch.Tensor, size: torch.Tensor | None, r: int, class_token: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One ToMe merge of ``x [F, T, C]`` (upstream ``bipartite_soft_matching`` then ``merge_wavg``).

    ``metric [F, T, D]``: the similarity features; ``size [F, T, 1]`` float32, None for all ones. At most
    ``(T - class_token) // 2`` tokens merge. Returns the merged ``x [F, T - r, C]``, the new sizes, and
    ``dest [F, T]``, the new index of every input token (sizes and dest None when nothing merges). New order,
    as upstream: the unmerged A (even) tokens, by descending best score (in index order with a class token,
    which keeps it first), then all B (odd) tokens.
    """
    frames, tokens, channels = x.shape
    r = min(r, (tokens - int(class_token)) // 2)
    if r <= 0:
        return x, size, None
    with torch.no_grad():  # only indices come out of the matching
        metric = metric / metric.norm(dim=-1, keepdim=True)
        scores = metric[:, ::2] @ metric[:, 1::2].transpose(1, 2)  # cosine of each A token with each B token
        if class_token:
            scores[:, 0] = -math.inf  # the class token is A's first and never merges
        best, partner = scores.max(dim=-1)
        order = best.argsort(dim=-1, descending=True)
        src, unm = order[:, :r], order[:, r:]
        if class_token:
            unm = unm.sort(dim=-1).values
        dst = partner.gather(1, src)

    def merge(t: torch.Tensor) -> torch.Tensor:  # sum each chosen A row into its B partner
        a, b = t[:, ::2], t[:, 1::2]
        b = b.scatter_reduce(1, dst.unsqueeze(-1).expand(-1, -1, t.shape[-1]), gather_rows(a, src), "sum")
        return torch.cat([gather_rows(a, unm), b], dim=1)

    # Sizes stay float32 (exact counts in any model dtype); the weighted mean is taken in float32 too.
    size = x.new_ones(frames, tokens, 1, dtype=torch.float32) if size is None else size
    merged, size = merge(x.float() * size), merge(size)
    x = (merged / size).to(x.dtype)

    n_unm = unm.shape[1]
    dest_a = torch.empty_like(best, dtype=torch.long)
    dest_a.scatter_(1, unm, torch.arange(n_unm, device=x.device).expand(frames, -1))
    dest_a.scatter_(1, src, n_unm + dst)
    dest = torch.empty(frames, tokens, dtype=torch.long, device=x.device)
    dest[:, ::2], dest[:, 1::2] = dest_a, n_unm + torch.arange(tokens // 2, device=x.device)
    return x, size, dest


def proportional_attention(
    attn: nn.Module, hidden: torch.Tensor, size: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``attn``'s self-attention over the normed ``hidden [F, T, C]``, each key's logits raised by
    ``log(size)`` (upstream ``ToMeAttention``). Returns the branch after ``out_proj`` and the ToMe metric:
    the keys averaged over heads ``[F, T, head_dim]``."""
    frames, tokens, channels = hidden.shape

    def heads(t: torch.Tensor) -> torch.Tensor:  # [F, T, C] -> [F, H, T, C / H]
        return t.view(frames, tokens, -1, attn.head_dim).transpose(1, 2)

    query, key, value = (heads(proj(hidden)) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    bias = None if size is None else size.log().to(query.dtype).view(frames, 1, 1, tokens)
    dropout = getattr(attn, "dropout", 0.0) if attn.training else 0.0
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=bias, dropout_p=dropout, scale=attn.scale
    )
    return attn.out_proj(out.transpose(1, 2).reshape(frames, tokens, channels)), key.mean(dim=1)


def tome_layer(
    layer: nn.Module, x: torch.Tensor, size: torch.Tensor | None, r: int, class_token: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One pre-LN encoder layer with ToMe (upstream ``ToMeBlock``): attention, merge, MLP.
    Returns ``bipartite_merge``'s ``(x, size, dest)`` with the MLP branch added to ``x``."""
    attn_out, metric = proportional_attention(layer.self_attn, layer.layer_norm1(x), size)
    x, size, dest = bipartite_merge(x + attn_out, metric, size, r, class_token)
    return x + layer.mlp(layer.layer_norm2(x)), size, dest


class ToMe:
    """Merge ``r`` tokens per encoder layer of a SigLIP / CLIP tower; unmerge after the last layer.

    Args:
        r: tokens merged per layer, the same in every layer (int) or one per layer (list); each layer merges
            at most half of its tokens (the CLS token, CLIP's, is never merged). All frames (batch rows)
            merge the same number, so shapes stay rectangular.

    Example:
        >>> tome = ToMe(ToMe.schedule(tokens=729, layers=26, keep=223)).attach(vision_model)
        >>> out = vision_model(pixel_values=frames)  # out.last_hidden_state: [F, 729, C] again
        >>> tome.tokens[-1]  # 223 distinct tokens per frame
        >>> tome.detach()
    """

    def __init__(self, r: int | list[int] = 0) -> None:
        values = r if isinstance(r, list) else [r]
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
            raise ValueError(f"r must be a non-negative integer or a list of them, got {r!r}")
        self.r = r
        self._layers: list[nn.Module] = []
        self._rs: list[int] = []
        self._class_token = False
        self._size: torch.Tensor | None = None
        self.tokens: list[int] = []
        """Per layer, the token count after that layer's merge in the latest call."""
        self.index_map: torch.Tensor | None = None
        """``[F, T]``: for each original position, the index of the token it was merged into after the last
        layer, in the latest call (None when nothing merged): upstream's source matrix as an index."""

    def attach(self, vision_model: nn.Module) -> ToMe:
        """Patch every encoder layer (``.encoder.layers``, ``.vision_model.encoder.layers``). Returns self."""
        if self._layers:
            raise ValueError("this ToMe is already attached to a model; call detach() first")
        tower = getattr(vision_model, "vision_model", vision_model)
        layers = getattr(getattr(tower, "encoder", None), "layers", None)
        if layers is None:
            raise ValueError(f"cannot find the encoder layers of {type(vision_model).__name__}")
        layers = list(layers)
        if isinstance(self.r, list) and len(self.r) != len(layers):
            raise ValueError(f"r has {len(self.r)} entries for {len(layers)} encoder layers")
        for i, layer in enumerate(layers):
            attn = getattr(layer, "self_attn", None)
            missing = [p for p in _PARTS if not hasattr(layer, p)]
            missing += [
                f"self_attn.{p}" for p in _ATTENTION_PARTS if attn is not None and not hasattr(attn, p)
            ]
            if missing:
                raise ValueError(
                    f"encoder layer {i} ({type(layer).__name__}) is not a pre-LN ViT block: {missing}"
                )
            if "forward" in layer.__dict__:  # ours or another wrapper's (STCCacher): stacking would skip one
                raise ValueError(
                    f"encoder layer {i} is already patched (ToMe or STCCacher attached); detach it"
                )
        self._rs = list(self.r) if isinstance(self.r, list) else [self.r] * len(layers)
        # CLIP puts a class token first and upstream never merges it; SigLIP has none.
        self._class_token = hasattr(getattr(tower, "embeddings", None), "class_embedding")
        self._layers = layers
        for i, layer in enumerate(layers):
            layer.forward = self._patched_forward(i, layer, layer.forward)
        return self

    def detach(self) -> None:
        """Restore the stock layers and drop all state. A no-op when not attached."""
        for layer in self._layers:
            del layer.forward  # attach refused instance-level forwards, so the class's is the stock one
        self._layers, self._rs, self._size, self.tokens, self.index_map = [], [], None, [], None

    def _patched_forward(self, index: int, layer: nn.Module, stock_forward):
        last = index == len(self._rs) - 1

        def forward(hidden_states, attention_mask=None, **kwargs):
            if attention_mask is not None:
                raise ValueError("ToMe supports unmasked vision encoders only, got an attention_mask")
            if kwargs.get("output_attentions"):
                raise ValueError("ToMe's attention returns no weights: call without output_attentions")
            if index == 0:  # a new call of the tower
                self._size, self.tokens, self.index_map = None, [], None
            if self._size is None and self._rs[index] == 0:
                x = stock_forward(
                    hidden_states, attention_mask, **kwargs
                )  # nothing merged yet: stock, exactly
            else:
                x, self._size, dest = tome_layer(
                    layer, hidden_states, self._size, self._rs[index], self._class_token
                )
                if dest is not None:
                    self.index_map = dest if self.index_map is None else dest.gather(1, self.index_map)
            self.tokens.append(x.shape[1])
            if last and self.index_map is not None:
                x = gather_rows(x, self.index_map)  # unmerge: each position gets a copy of its merged token
            return x

        return forward

    @staticmethod
    def schedule(tokens: int, layers: int, keep: int, *, class_token: bool = False) -> list[int]:
        """r per layer, as even as possible, that leaves exactly ``keep`` of ``tokens`` after ``layers``.

        Each layer takes ceil(remaining / layers left), raised where the half cap of the later layers demands
        it (n layers take t unprotected tokens down to ceil(t / 2**n) at best); then larger r go first, which
        keeps every cap (a larger r merged earlier faces more tokens) and saves the most ViT time.
        ``class_token``: the first token is protected (counted in ``tokens`` and ``keep``).
        """
        t, goal = tokens - int(class_token), keep - int(class_token)
        if layers < 1 or not 0 <= goal <= t:
            raise ValueError(
                f"need layers >= 1 and keep in [{int(class_token)}, {tokens}], got {layers}, {keep}"
            )
        if -(-t // 2**layers) > goal:
            raise ValueError(
                f"cannot keep {keep} of {tokens} tokens with {layers} layers: each layer merges at most "
                f"half of its unprotected tokens, so at least {-(-t // 2**layers) + int(class_token)} remain"
            )
        rs = []
        for left in range(layers, 0, -1):
            rs.append(max(-(-(t - goal) // left), t - goal * 2 ** (left - 1)))
            t -= rs[-1]
        return sorted(rs, reverse=True)
