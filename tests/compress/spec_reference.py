"""The STC algorithms written out step by step from docs/stc-algorithm.md, one frame and one token
set at a time, as independent as possible from the package's batched code. Tests compare against it."""

import torch
import torch.nn.functional as F


def encoder_input(model, pixel_values, **kwargs) -> torch.Tensor:
    """The hidden states that enter the first encoder layer, from a stock forward."""
    root = getattr(model, "vision_model", model)
    seen = []
    handle = root.encoder.register_forward_pre_hook(
        lambda _m, args, kw: seen.append(kw.get("inputs_embeds", args[0] if args else None)), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model(pixel_values=pixel_values, **kwargs)
    finally:
        handle.remove()
    return seen[0]


def _attention(attn, q, k, v):
    """Eager multi-head attention, q [n, C], k/v [T, C] -> [n, C] (before out_proj)."""
    heads = lambda t: t.view(t.shape[0], attn.num_heads, attn.head_dim).transpose(0, 1)  # noqa: E731
    weights = torch.softmax(heads(q) @ heads(k).transpose(1, 2) * attn.scale, dim=-1)
    return (weights @ heads(v)).transpose(0, 1).reshape(q.shape[0], -1)


class ReferenceCacher:
    """Spec section 1 for one encoder: per-layer references from the last frame of reference chunks."""

    def __init__(self, model, update_ratio=0.25, interval=2, similarity_threshold=None):
        self.layers = list(getattr(model, "vision_model", model).encoder.layers)
        self.update_ratio, self.interval, self.tau = update_ratio, interval, similarity_threshold
        self.refs = [None] * len(self.layers)
        self.chunk = 0

    def run_chunk(self, h):
        """h [F, T, C] encoder input -> (per-layer outputs, per-layer selected index sets or None)."""
        outputs, selections = [], []
        reference_chunk = self.chunk % self.interval == 0
        self.chunk += 1
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                ref = self.refs[i]
                if reference_chunk or ref is None or ref["K"].shape != h.shape[1:]:
                    h, self.refs[i] = self._reference_layer(layer, h)
                    selections.append(None)
                else:
                    h, chosen = self._selective_layer(layer, ref, h)
                    selections.append(chosen)
                outputs.append(h)
        return outputs, selections

    def _reference_layer(self, layer, h):
        attn = layer.self_attn
        outs, store = [], None
        for frame in h:
            x = layer.layer_norm1(frame)
            q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
            a = attn.out_proj(_attention(attn, q, k, v))
            h1 = frame + a
            m = layer.mlp(layer.layer_norm2(h1))
            outs.append(h1 + m)
            store = {"K": k, "V": v, "A": a, "M": m}  # the last frame's wins
        return torch.stack(outs), store

    def _choose(self, sim):
        tokens = sim.shape[0]
        if self.tau is None:
            n = min(max(int(tokens * self.update_ratio), 1), tokens)
            return torch.topk(sim, n, largest=False).indices
        below = torch.nonzero(sim < self.tau).flatten()
        return below if len(below) else sim.argmin().reshape(1)

    def _selective_layer(self, layer, ref, h):
        attn = layer.self_attn
        outs, chosen = [], []
        for frame in h:
            x = layer.layer_norm1(frame)
            k = attn.k_proj(x)
            sim = F.cosine_similarity(k, ref["K"], dim=-1)
            idx = self._choose(sim)
            v_mix = ref["V"].clone()
            v_mix[idx] = attn.v_proj(x[idx])
            a_mix = ref["A"].clone()
            a_mix[idx] = attn.out_proj(_attention(attn, attn.q_proj(x[idx]), k, v_mix))
            h1 = frame + a_mix
            m_mix = ref["M"].clone()
            m_mix[idx] = layer.mlp(layer.layer_norm2(h1)[idx])
            outs.append(h1 + m_mix)
            chosen.append(set(idx.tolist()))
        return torch.stack(outs), chosen


class ReferencePruner:
    """Spec section 2: one chunk at a time, memory of chunk means in each chunk's channel order."""

    def __init__(self, k, channel_ratio=0.5, alphas=(1 / 8, 1 / 4, 1 / 2, 1, 2), window=None):
        self.k, self.ratio, self.alphas, self.window = k, channel_ratio, alphas, window
        self.history = []

    def compress(self, X):
        Fr, P, D = X.shape
        Xf = X.reshape(Fr * P, D).float()
        var = ((Xf - Xf.mean(0)) ** 2).mean(0)
        ch = torch.argsort(var, stable=True)[: int(D * self.ratio)]
        Z = Xf[:, ch].reshape(Fr, P, -1)
        self.history.append(Z.mean(dim=(0, 1)))
        if self.window:
            self.history = self.history[-self.window :]
        mem = sum(self.history) / len(self.history)
        G = lambda a, b: sum(torch.exp(-((a - b) ** 2).sum(-1) / (2 * al)) for al in self.alphas)  # noqa: E731
        kept, keep_idx = [], []
        mmean = mem / mem.norm()
        for f in range(Fr):
            Zn = Z[f] / Z[f].norm(dim=-1, keepdim=True)
            fmean = Zn.mean(0)
            score = G(Zn, mmean) + G(Zn, fmean)
            keep = sorted(torch.argsort(score, stable=True)[: self.k].tolist())
            keep_idx.append(keep)
            kept.append(X[f, keep])
        return torch.stack(kept), torch.tensor(keep_idx)


def qwen2vl_block_input(tower, pixel_values, grid_thw):
    """(hidden [N, C], cu_seqlens as a list, (cos, sin) [N, D]) as they enter the first vision block of a
    Qwen2-VL tower, from a stock forward."""
    seen = []
    handle = tower.blocks[0].register_forward_pre_hook(
        lambda _m, args, kw: seen.append((args, kw)), with_kwargs=True
    )
    try:
        with torch.no_grad():
            tower(pixel_values, grid_thw=grid_thw)
    finally:
        handle.remove()
    args, kw = seen[0]
    return (args[0] if args else kw["hidden_states"]), kw["cu_seqlens"].tolist(), kw["position_embeddings"]


def _rope(x, cos, sin, heads):
    """2-D vision RoPE of x [L, C] (heads concatenated) with cos/sin [L, D]: each head's dims (i, i + D/2)
    rotated by the token's angle."""
    x = x.view(x.shape[0], heads, -1)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos[:, None] + rotated * sin[:, None]).reshape(x.shape[0], -1)


def _segment_attention(q, k, v, heads):
    """Eager attention within one temporal patch, q [n, C], k/v [T, C] -> [n, C] (before proj)."""
    split = lambda t: t.view(t.shape[0], heads, -1).transpose(0, 1)  # noqa: E731
    weights = torch.softmax(split(q) @ split(k).transpose(1, 2) * split(q).shape[-1] ** -0.5, dim=-1)
    return (weights @ split(v)).transpose(0, 1).reshape(q.shape[0], -1)


class ReferenceQwen2VLCacher(ReferenceCacher):
    """Spec section 1 on Qwen2-VL vision blocks, one temporal patch (cu_seqlens segment) at a time: the
    reference is the last segment of the latest reference chunk and serves only segments on its grid (from
    grid_thw); keys are compared after RoPE, as the attention uses them."""

    def __init__(self, tower, update_ratio=0.25, interval=2, similarity_threshold=None):
        self.tower, self.layers = tower, list(tower.blocks)
        self.update_ratio, self.interval, self.tau = update_ratio, interval, similarity_threshold
        self.refs = [None] * len(self.layers)
        self.chunk = 0

    def run_chunk(self, pixel_values, grid_thw):
        """-> (per-block outputs [N, C], per-block selected index sets per segment, or None)."""
        h, cu, (cos, sin) = qwen2vl_block_input(self.tower, pixel_values, grid_thw)
        grids = [(gh, gw) for t, gh, gw in grid_thw.tolist() for _ in range(t)]
        segments = [slice(a, b) for a, b in zip(cu[:-1], cu[1:], strict=True)]
        outputs, selections = [], []
        reference_chunk = self.chunk % self.interval == 0
        self.chunk += 1
        with torch.no_grad():
            for i, block in enumerate(self.layers):
                ref = self.refs[i]
                if reference_chunk or ref is None or any(grid != ref["grid"] for grid in grids):
                    h, self.refs[i] = self._reference_block(block, h, segments, cos, sin)
                    self.refs[i]["grid"] = grids[-1]
                    selections.append(None)
                else:
                    h, chosen = self._selective_block(block, ref, h, segments, cos, sin)
                    selections.append(chosen)
                outputs.append(h)
        return outputs, selections

    @staticmethod
    def _qkv(block, x):
        return (x @ block.attn.qkv.weight.T + block.attn.qkv.bias).chunk(3, dim=-1)

    def _reference_block(self, block, h, segments, cos, sin):
        heads = block.attn.num_heads
        outs, store = [], None
        for s in segments:
            frame = h[s]
            q, k, v = self._qkv(block, block.norm1(frame))
            att = _segment_attention(
                _rope(q, cos[s], sin[s], heads), _rope(k, cos[s], sin[s], heads), v, heads
            )
            a = block.attn.proj(att)
            h1 = frame + a
            m = block.mlp(block.norm2(h1))
            outs.append(h1 + m)
            store = {"K": k, "V": v, "A": a, "M": m}  # the last segment's wins
        return torch.cat(outs), store

    def _selective_block(self, block, ref, h, segments, cos, sin):
        heads = block.attn.num_heads
        outs, chosen = [], []
        for s in segments:
            frame, c, sn = h[s], cos[s], sin[s]
            x = block.norm1(frame)
            k = _rope(self._qkv(block, x)[1], c, sn, heads)
            sim = F.cosine_similarity(k, _rope(ref["K"], c, sn, heads), dim=-1)
            idx = self._choose(sim)
            q_sel, _, v_sel = self._qkv(block, x[idx])
            v_mix = ref["V"].clone()
            v_mix[idx] = v_sel
            a_mix = ref["A"].clone()
            a_mix[idx] = block.attn.proj(
                _segment_attention(_rope(q_sel, c[idx], sn[idx], heads), k, v_mix, heads)
            )
            h1 = frame + a_mix
            m_mix = ref["M"].clone()
            m_mix[idx] = block.mlp(block.norm2(h1)[idx])
            outs.append(h1 + m_mix)
            chosen.append(set(idx.tolist()))
        return torch.cat(outs), chosen


def qwen_block_inputs(tower, pixel_values, grid_thw):
    """(hidden [N, C] entering the first block, each block's cu_seqlens as a list, (cos, sin) [N, D]) from a
    stock forward of a Qwen2-VL-style tower; for Qwen2.5-VL all in the tower's window order."""
    seen = []
    handles = [
        block.register_forward_pre_hook(lambda _m, args, kw: seen.append((args, kw)), with_kwargs=True)
        for block in tower.blocks
    ]
    try:
        with torch.no_grad():
            tower(pixel_values, grid_thw=grid_thw)
    finally:
        for handle in handles:
            handle.remove()
    args, kw = seen[0]
    hidden = args[0] if args else kw["hidden_states"]
    return hidden, [kw["cu_seqlens"].tolist() for _args, kw in seen], kw["position_embeddings"]


class ReferenceQwen25VLCacher(ReferenceQwen2VLCacher):
    """Spec section 1 on Qwen2.5-VL vision blocks, in the tower's window order (the order the blocks see).

    A frame is a temporal patch: grid_thw's patches in order, gh * gw consecutive rows each. Attention is
    what the block's own cu_seqlens say: a token's query, selected or not, attends only over the keys and
    values of its segment (a window in windowed blocks, the whole temporal patch in full-attention ones).
    The reference is the last temporal patch of the latest reference chunk, used only for patches on its
    grid; keys are compared after RoPE."""

    def run_chunk(self, pixel_values, grid_thw):
        """-> (per-block outputs [N, C], per-block selected index sets per temporal patch, or None)."""
        h, block_bounds, (cos, sin) = self.block_inputs(pixel_values, grid_thw)
        grids = [(gh, gw) for t, gh, gw in grid_thw.tolist() for _ in range(t)]
        frames, start = [], 0
        for gh, gw in grids:
            frames.append(slice(start, start + gh * gw))
            start += gh * gw
        outputs, selections = [], []
        reference_chunk = self.chunk % self.interval == 0
        self.chunk += 1
        with torch.no_grad():
            for i, block in enumerate(self.layers):
                bounds = block_bounds[i]
                segments = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
                ref = self.refs[i]
                if reference_chunk or ref is None or any(grid != ref["grid"] for grid in grids):
                    h, self.refs[i] = self._reference_windows(block, h, frames[-1], segments, cos, sin)
                    self.refs[i]["grid"] = grids[-1]
                    selections.append(None)
                else:
                    h, chosen = self._selective_windows(block, ref, h, frames, segments, cos, sin)
                    selections.append(chosen)
                outputs.append(h)
        return outputs, selections

    def block_inputs(self, pixel_values, grid_thw):
        return qwen_block_inputs(self.tower, pixel_values, grid_thw)

    def _reference_windows(self, block, h, last, segments, cos, sin):
        heads = block.attn.num_heads
        q, k, v = self._qkv(block, block.norm1(h))
        q, k_rot = _rope(q, cos, sin, heads), _rope(k, cos, sin, heads)
        att = torch.cat([_segment_attention(q[s], k_rot[s], v[s], heads) for s in segments])
        a = block.attn.proj(att)
        h1 = h + a
        m = block.mlp(block.norm2(h1))
        return h1 + m, {"K": k[last], "V": v[last], "A": a[last], "M": m[last]}

    def _selective_windows(self, block, ref, h, frames, segments, cos, sin):
        heads = block.attn.num_heads
        outs, chosen = [], []
        for fr in frames:
            frame, c, sn = h[fr], cos[fr], sin[fr]
            x = block.norm1(frame)
            k = _rope(self._qkv(block, x)[1], c, sn, heads)
            sim = F.cosine_similarity(k, _rope(ref["K"], c, sn, heads), dim=-1)
            idx = self._choose(sim)
            v_mix = ref["V"].clone()
            v_mix[idx] = self._qkv(block, x[idx])[2]
            a_mix = ref["A"].clone()
            for t in idx.tolist():  # one selected token at a time, over the keys of its own segment only
                (seg,) = [s for s in segments if s.start <= fr.start + t < s.stop]
                own = slice(seg.start - fr.start, seg.stop - fr.start)
                assert 0 <= own.start and own.stop <= frame.shape[0], "a segment crosses a temporal patch"
                q = _rope(self._qkv(block, x[t : t + 1])[0], c[t : t + 1], sn[t : t + 1], heads)
                a_mix[t] = block.attn.proj(_segment_attention(q, k[own], v_mix[own], heads))[0]
            h1 = frame + a_mix
            m_mix = ref["M"].clone()
            m_mix[idx] = block.mlp(block.norm2(h1)[idx])
            outs.append(h1 + m_mix)
            chosen.append(set(idx.tolist()))
        return torch.cat(outs), chosen


def qwen3vl_deepstack(tower, outputs):
    """Qwen3-VL's deepstack features from per-block outputs: block i's output through the patch merger that
    ``deepstack_visual_indexes`` assigns to it."""
    with torch.no_grad():
        return [
            merger(outputs[i])
            for i, merger in zip(tower.deepstack_visual_indexes, tower.deepstack_merger_list, strict=True)
        ]
