"""StreamForest's visual memory (``../shared/docs/upstream-streamforest.md`` section 3 and section 11), in
this project's own formulation: the Fine-grained Spatiotemporal Window and the Persistent Event Memory
Forest of upstream ``llava/model/multimodal_projector/memory_manager.py`` (MCG-NJU/StreamForest@0915f49),
pure torch, one object per video.

Frames enter a "now" buffer (``update``); everything else happens when the memory is read (``tokens``):
frames that left the now buffer are ToMe-merged per frame into the short window; while the short window
holds ``windows[1] + split_window`` frames, its oldest frames are cut into an event at the least similar
adjacent pair and merged into long memory; while long memory is over its quota, the adjacent pair of
events with the smallest penalty is merged. Its output reproduces upstream's ``get_memory_tokens()`` to
float32 rounding, token order included (the same torch operations in the same order, so on one device
the result is usually bit-identical; ties are broken as upstream's ``max``/``argsort``/``argmin`` do).

Names, against upstream's ``MemoryManager(hidden_size, num_attention_heads, ...)`` (``:82-83``):
``dim`` = ``hidden_size``, ``heads`` = ``num_attention_heads`` (only used to fold the channels into
``heads`` groups of ``dim // heads`` and average them for the merge metric, ``:138-142``), ``windows`` =
``st_memory_windows``, ``tokens`` = ``st_memory_tokens``, ``split_window`` = ``event_split_window``,
``long_tokens_per_frame`` = ``long_memory_tokens_per_frame``, ``long_quota`` = ``long_memory_tokens_quota``,
``weights`` = ``(sim_weight_g, time_weight_a, merge_weight_b)``. ``tokens()`` returns ``[N, C]`` where
upstream returns ``[1, N, C]``; ``reset()`` does not exist upstream (it builds a new object per question).

Deviations, all on inputs upstream crashes on, hangs on or misreads: a frame with fewer tokens than
``tokens[0]`` (upstream asserts), a frame whose channel count is not ``dim`` (upstream may reshape it
silently), ``tokens()`` before any frame (upstream fails in ``torch.cat``), and configurations whose
merges would need more tokens than they get (``tokens[1] > tokens[0]``, ``long_tokens_per_frame >
tokens[1]``: upstream asserts at the first read) or a target of 0 tokens (upstream's merge plan loops
forever) raise ``ValueError``; ``windows[0] >= 1`` and ``split_window >= 1`` are required (with 0, the
now frame is not shown, or upstream stacks an empty list). A frame with more than ``tokens[0]`` tokens is
merged down to it in ``update``, as upstream does.

The memory keeps references to the frames it is given (as upstream does): do not modify them in place.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _merge_plan(tokens: int, target: int) -> list[int]:
    """How many tokens each ToMe step removes to go from ``tokens`` to ``target`` (``:129-135``): a step
    can remove at most half of its tokens (one per A token), so halve until the rest fits in one step."""
    steps = []
    while tokens - target > tokens // 2:
        steps.append(tokens // 2)
        tokens -= tokens // 2
    steps.append(tokens - target)
    return steps


def _head_mean(x: torch.Tensor, heads: int) -> torch.Tensor:
    """The matching metric: channels folded into ``heads`` groups and averaged (``:142``, ``:165``)."""
    return x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads).mean(-2)


def _bipartite_step(
    x: torch.Tensor, size: torch.Tensor, remove: int, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ToMe bipartite soft-matching step on ``x [B, P, C]`` with token sizes ``size [B, P, 1]``
    (``:8-44,64-78``): even tokens (A) are matched to their most similar odd token (B) by cosine of the
    metric; the ``remove`` A tokens with the best matches are added into their B token, as size-weighted
    means. Returns the surviving A tokens, best-scored first, then all B tokens in order, and the sizes."""
    with torch.no_grad():
        metric = _head_mean(x, heads)
        metric = metric / metric.norm(dim=-1, keepdim=True)
        scores = metric[..., ::2, :] @ metric[..., 1::2, :].transpose(-1, -2)
        best, match = scores.max(dim=-1)
        order = best.argsort(dim=-1, descending=True)
        kept, merged = order[:, remove:, None], order[:, :remove, None]
        into = match[..., None].gather(dim=1, index=merged)

    def combine(values: torch.Tensor) -> torch.Tensor:
        a, b = values[:, ::2], values[:, 1::2]
        width = values.shape[-1]
        survivors = a.gather(dim=1, index=kept.expand(-1, -1, width))
        sources = a.gather(dim=1, index=merged.expand(-1, -1, width))
        b = b.scatter_add(1, into.expand(-1, -1, width), sources)
        return torch.cat([survivors, b], dim=1)

    # Sums of size-weighted tokens and of sizes, then their ratio: the same arithmetic as upstream.
    summed = combine(x * size)
    size = combine(size)
    return summed / size, size


def _merge_tokens(x: torch.Tensor, target: int, heads: int) -> torch.Tensor:
    """ToMe ``x [B, P, C]`` down to ``target`` tokens per batch row (``:115-150``). Token sizes carry
    across the steps of one call and start at 1 on every call, as upstream."""
    tokens = x.shape[1]
    if tokens == target:
        return x
    if target < 1 or tokens < target:
        raise ValueError(f"cannot merge {tokens} tokens down to {target}")
    size = torch.ones_like(x[..., :1])
    for remove in _merge_plan(tokens, target):
        x, size = _bipartite_step(x, size, remove, heads)
    return x


def _pair_similarity(first: torch.Tensor, second: torch.Tensor, heads: int) -> float:
    """How well two events ``[n, L, C]`` would merge (``:152-174``): the mean of the best ``r`` A-token
    match scores over their concatenated tokens, ``r`` being what merging them to ``ceil((n1+n2)/2)``
    frame slots removes."""
    per_slot = first.shape[1]
    flat = torch.cat([first, second]).reshape(-1, first.shape[-1])
    remove = flat.shape[0] - math.ceil((first.shape[0] + second.shape[0]) / 2) * per_slot
    with torch.no_grad():
        metric = _head_mean(flat, heads)
        metric = metric / metric.norm(dim=-1, keepdim=True)
        best = (metric[::2] @ metric[1::2].transpose(-1, -2)).max(dim=-1).values
        return best.topk(remove, largest=True).values.mean().item()


class EventMemory:
    """StreamForest's memory for one video: ``update()`` per frame, ``tokens()`` to read it.

    After a read the output is ``[long events][short window][now]`` along tokens (section 3.4 (d)):
    at most ``long_quota`` long tokens (unless a single event is larger), fewer than
    ``windows[1] + split_window`` short frames of ``tokens[1]`` tokens and ``windows[0]`` now frames of
    ``tokens[0]`` tokens. Reading changes the state (frames move to the short window, events split and
    merge), but reading twice in a row returns the same tokens.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        windows: tuple[int, int] = (1, 18),
        tokens: tuple[int, int] = (729, 128),
        split_window: int = 8,
        long_tokens_per_frame: int = 64,
        long_quota: int = 5120,
        weights: tuple[float, float, float] = (0.4, 0.2, 0.4),
    ) -> None:
        if heads < 1 or dim % heads:
            raise ValueError(f"dim {dim} must be a multiple of heads {heads}")
        if windows[0] < 1 or windows[1] < 0 or split_window < 1:
            raise ValueError(
                f"need windows[0] >= 1, windows[1] >= 0, split_window >= 1: {windows}, {split_window}"
            )
        if not tokens[0] >= tokens[1] >= long_tokens_per_frame >= 1:
            raise ValueError(
                "need tokens[0] >= tokens[1] >= long_tokens_per_frame >= 1 (each stage merges down): "
                f"{tokens}, {long_tokens_per_frame}"
            )
        self.dim, self.heads = dim, heads
        # Private names: `tokens` is the reading method.
        self._now_window, self._short_window = windows
        self._now_tokens, self._short_tokens = tokens
        self._split_window = split_window
        self._per_slot, self._long_quota = long_tokens_per_frame, long_quota
        self._weights = tuple(weights)
        self.reset()

    def reset(self) -> None:
        """Forget the video (upstream builds a new MemoryManager instead, ``:100-113``)."""
        self._now: list[torch.Tensor] = []  # [tokens[0], C] each
        self._short: list[torch.Tensor] = []  # [tokens[1], C] each
        # Raw-frame cosine between consecutive frames; entry j compares _short[j] with the frame after it.
        self._frame_sims: list[torch.Tensor] = []
        self._last_frame: torch.Tensor | None = None
        self._events: list[torch.Tensor] = []  # [slots, long_tokens_per_frame, C] each
        # Event centres in frames, kept as float32 tensors: upstream's arithmetic on them happens in float32
        # (its frame count is an int64 tensor), and the long-memory merge must choose as it does.
        self._times: list[torch.Tensor] = []
        self._counts: list[int] = []  # original events in each event
        self._pair_sims: list[float] = []  # _pair_similarity of events i and i + 1
        self._last_pos = -1  # index of the last frame that went into an event

    def update(self, frame: torch.Tensor, similarity: torch.Tensor | None = None) -> None:
        """Add one frame ``[P, C]`` (section 3.3, ``:277-289``). ``P`` should be ``tokens[0]``; a larger
        frame is ToMe-merged down to it, as upstream does. ``similarity``: the cosine to the previous
        frame that places event cuts, where the caller computed it on other tokens (a pruned frame's
        kept tokens differ from the last one's, so STC-Pruner's caller gives the unpruned frames')."""
        if frame.dim() != 2 or frame.shape[1] != self.dim:
            raise ValueError(f"expected a frame [P, {self.dim}], got {tuple(frame.shape)}")
        if frame.shape[0] < self._now_tokens:
            raise ValueError(
                f"a frame needs at least tokens[0] = {self._now_tokens} tokens, got {frame.shape[0]}"
            )
        flat = frame.reshape(-1)
        if self._last_frame is not None:
            if similarity is None:
                similarity = F.cosine_similarity(self._last_frame, flat, dim=0)
            self._frame_sims.append(similarity)
        self._last_frame = flat
        self._now.append(_merge_tokens(frame[None], self._now_tokens, self.heads)[0])

    def tokens(self) -> torch.Tensor:
        """Compress what is due and return the memory ``[N, C]`` (section 3.4, ``:292-306``)."""
        if not self._now:
            raise ValueError("the memory is empty: update() it with a frame first")
        self._fill_short_window()
        self._split_events()
        self._merge_long_memory()
        flat_events = [event.reshape(-1, self.dim) for event in self._events]
        return torch.cat(flat_events + self._short + self._now)

    def _fill_short_window(self) -> None:
        """Frames beyond the newest ``windows[0]`` are merged to ``tokens[1]`` each (3.4 (a), ``:176-184``),
        in one batched call as upstream."""
        overflow = len(self._now) - self._now_window
        if overflow <= 0:
            return
        merged = _merge_tokens(torch.stack(self._now[:overflow]), self._short_tokens, self.heads)
        self._now = self._now[overflow:]
        self._short.extend(merged.unbind(0))

    def _split_events(self) -> None:
        """Cut events off the oldest short frames at their least similar adjacent pair (3.4 (b),
        ``:188-220``)."""
        per_slot = self._per_slot
        while len(self._short) >= self._short_window + self._split_window:
            # argmin over sims between short frames j and j+1 (first on ties); the cut keeps frames 0..j.
            cut = int(torch.stack(self._frame_sims[: self._split_window]).argmin()) + 1
            popped = torch.cat(self._short[:cut])[None]
            self._short, self._frame_sims = self._short[cut:], self._frame_sims[cut:]
            # The reshape to [cut, per_slot, C] is positional: a slot is not a frame any more.
            event = _merge_tokens(popped, per_slot * cut, self.heads).reshape(cut, per_slot, self.dim)
            self._events.append(event)
            self._times.append(torch.tensor((2 * self._last_pos + cut + 1) / 2, dtype=torch.float32))
            self._last_pos += cut
            self._counts.append(1)
            if len(self._events) > 1:
                self._pair_sims.append(_pair_similarity(self._events[-2], self._events[-1], self.heads))

    def _long_tokens(self) -> int:
        return sum(event.shape[0] * event.shape[1] for event in self._events)

    def _merge_long_memory(self) -> None:
        """Merge the adjacent events with the smallest penalty until long memory fits its quota (3.4 (c),
        ``:222-274``)."""
        sim_weight, time_weight, merge_weight = self._weights
        while self._long_tokens() > self._long_quota and len(self._events) > 1:
            # float32 throughout, with upstream's operand types, so that near-equal penalties order alike.
            sims = torch.tensor(self._pair_sims, dtype=torch.float32)
            times = torch.stack(self._times)
            centres = (times[1:] + times[:-1]) / 2
            counts = torch.tensor(
                [(a + b) / 2 for a, b in zip(self._counts[:-1], self._counts[1:], strict=True)],
                dtype=torch.float32,
            )
            # Centres over (frames seen - 1) (:233): older pairs get smaller time penalties, so with the
            # time weight alone the oldest pair merges first.
            length = torch.tensor(self._last_pos + len(self._short) + len(self._now))
            penalty = (
                sim_weight * (1 - sims)
                + time_weight * (centres / length)
                + merge_weight * (counts / counts.max() + 1e-6)
            )
            i = int(torch.argmin(penalty))
            first, second = self._events[i], self._events[i + 1]
            slots = math.ceil((first.shape[0] + second.shape[0]) / 2)
            joined = torch.cat([first, second]).reshape(1, -1, self.dim)
            merged = _merge_tokens(joined, slots * self._per_slot, self.heads)
            self._events[i] = merged.reshape(-1, self._per_slot, self.dim)
            del self._events[i + 1]
            # Centre weighted by frame slots, merge count summed (:255-260).
            n1, n2 = first.shape[0], second.shape[0]
            self._times[i] = (self._times[i] * n1 + self._times[i + 1] * n2) / (n1 + n2)
            del self._times[i + 1]
            self._counts[i] += self._counts.pop(i + 1)
            # Only the merged event's two neighbouring pairs change (:262-269).
            del self._pair_sims[i]
            if i >= 1:
                self._pair_sims[i - 1] = _pair_similarity(self._events[i - 1], self._events[i], self.heads)
            if i < len(self._events) - 1:
                self._pair_sims[i] = _pair_similarity(self._events[i], self._events[i + 1], self.heads)
