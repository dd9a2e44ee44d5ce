"""Dispider's glue between its stock networks, as plain tensor functions
(``../shared/docs/upstream-dispider.md`` sections 2-3; [D] is github Mark12Ding/Dispider at ba288b4).

Frame choice (``inference.py:34-73``), the 2x2 token mixing (``dispider/model/llava_arch.py:119-126``), the
pool projector's inputs (``dispider/model/multimodal_projector/builder.py:446-525``: per-frame grid pools and
one clip mean after the frame tokens), the per-clip row text (``inference.py:112-126``), the decision sequence
(``dispider/model/language_model/qwen_model/modeling_qwen.py:1276-1307``), the retrieval of the top clips
(``modeling_qwen.py:1955-1970``) and the reaction prompt (``dispider/conversation.py:287-297``). Written from
the spec and the shapes, not copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FRAMES_PER_CLIP = 16  # inference.py:139 (num_frames = 16)
MAX_CLIPS = 100  # inference.py:140, [OVO] models/Dispider.py:153-155
TOP_CLIPS = 4  # modeling_qwen.py:1966 (top-k, k = min(4, clips))
TEMPERATURE = 0.1  # modeling_qwen.py:1965 (softmax(cos / 0.1))
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)  # conv_qwen, conversation.py:287-297 (PHI separator style: sep " ")
IMAGE = "<image>"


def clip_count(duration: float, max_clips: int = MAX_CLIPS, frames_per_clip: int = FRAMES_PER_CLIP) -> int:
    """``num_clip = clamp(round(duration / 16), 1, max_clips)`` (inference.py:63-68; numpy rounds half to
    even, as Python's ``round`` does)."""
    return min(max(round(duration / frames_per_clip), 1), max_clips)


def sample_indices(total: int, wanted: int) -> list[int]:
    """``wanted`` frame indices of ``total``: the middles of equal segments of ``[0, total - 1]``, each
    segment's ends rounded half to even (inference.py:34-42, ``get_seq_frames``)."""
    size = (total - 1) / wanted
    return [(round(size * i) + round(size * (i + 1))) // 2 for i in range(wanted)]


def mix_2x2(features: torch.Tensor) -> torch.Tensor:
    """``[F, N, C]`` (a square raster of N patches) -> ``[F, N / 4, 4C]``: each 2x2 neighbourhood's four
    tokens side by side in the channels, in the order (top-left, top-right, bottom-left, bottom-right); the
    mixed tokens in raster order of the half-size grid."""
    frames, tokens, channels = features.shape
    side = round(tokens**0.5)
    if side * side != tokens or side % 2:
        raise ValueError(f"2x2 mixing needs an even square grid of tokens, got {tokens}")
    grid = features.reshape(frames, side // 2, 2, side // 2, 2, channels).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(frames, tokens // 4, 4 * channels)


def pool_inputs(tokens: torch.Tensor, resolution: int, pool_num: int) -> torch.Tensor:
    """A clip's mixed tokens ``[T * R, D]`` (T frames of R = ``resolution`` tokens) -> the pool projector's
    input ``[T * R + T * P + 1, D]``: the tokens, then per frame the means over a sqrt(P) x sqrt(P) grid of
    equal blocks (frame-major, blocks in raster order), then the mean of all the clip's tokens."""
    count, width = tokens.shape
    side, grid = round(resolution**0.5), round(pool_num**0.5)
    if side * side != resolution or grid * grid != pool_num or side % grid or count % resolution:
        raise ValueError(
            f"pool projector: {count} tokens are not frames of a square {resolution}-token grid "
            f"in a square {pool_num}-block grid"
        )
    frames = count // resolution
    blocks = tokens.reshape(frames, grid, side // grid, grid, side // grid, width).permute(0, 1, 3, 2, 4, 5)
    slots = blocks.reshape(frames, pool_num, resolution // pool_num, width).mean(dim=2)
    return torch.cat([tokens, slots.reshape(frames * pool_num, width), tokens.mean(dim=0, keepdim=True)])


class PoolProjector(nn.Module):
    """``pool_inputs`` then the MLP (Linear 4C -> d, GELU, Linear d -> d) on every token
    (builder.py:633-641)."""

    def __init__(self, mixed_width: int, hidden: int, resolution: int, pool_num: int):
        super().__init__()
        self.mlp = mlp2x_gelu(mixed_width, hidden)
        self.resolution, self.pool_num = resolution, pool_num

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(pool_inputs(tokens, self.resolution, self.pool_num))


def mlp2x_gelu(width: int, hidden: int) -> nn.Sequential:
    """``mlp2x_gelu``: Linear, GELU (exact), Linear (language_model/builder.py:175-214; projector builder)."""
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden))


def clip_text(start: float, end: float) -> str:
    """The text before a clip's tokens in its compact-model row (inference.py:118-124: ``%d`` of the rounded
    seconds)."""
    return f"This contains a clip sampled in {round(start)} to {round(end)} seconds"


def row_roles(text_tokens: int, frames: int, resolution: int, pool_num: int) -> list[int]:
    """The role of each position of a clip row (llava_arch.py:436-448): text and frame tokens 2 (the
    modality), the T * P slots 100 (their states are the clip's memory), the last token 200 (its state is
    the clip's time state)."""
    return [2] * (text_tokens + frames * resolution) + [100] * (frames * pool_num) + [200]


def decision_layout(clips: int, triggers: tuple[int, ...] = ()) -> list[tuple[str, int | None]]:
    """The parts of the decision sequence after ``clips`` clips (1-based clip counts in ``triggers``: the
    clips after which the model answered), modeling_qwen.py:1276-1290: ``ANS, Q``, then per answered
    segment ``S_j, ANS``, then the memories of the clips since the last answer, then ``Q, TODO``.
    ``("M", c)``: clip c's memory (0-based); ``("S", j)``: segment j's summary."""
    parts: list[tuple[str, int | None]] = [("ANS", None), ("Q", None)]
    for j, _ in enumerate(triggers):
        parts += [("S", j), ("ANS", None)]
    since = triggers[-1] if triggers else 0
    parts += [("M", c) for c in range(since, clips)]
    return parts + [("Q", None), ("TODO", None)]


def segments(triggers: tuple[int, ...]) -> list[range]:
    """The clips (0-based) each answered segment spans: ``(2, 5)`` -> clips 0-1 and 2-4."""
    starts = (0, *triggers[:-1]) if triggers else ()
    return [range(start, end) for start, end in zip(starts, triggers, strict=True)]


def retrieve(query: torch.Tensor, times: torch.Tensor, top: int = TOP_CLIPS) -> list[int]:
    """The clips (0-based, in time order) whose time states ``times [N, d]`` best match the query state
    ``query [d]``: top ``min(top, N)`` of ``softmax(cos / 0.1)`` (modeling_qwen.py:1962-1970)."""
    cos = F.normalize(times.float(), dim=-1) @ F.normalize(query.float(), dim=0)
    weights = torch.softmax(cos / TEMPERATURE, dim=0)
    return sorted(weights.topk(min(top, len(times))).indices.tolist())


def offline_clip_count(cos: torch.Tensor, low: int = 4, high: int = 28) -> int:
    """The offline VideoMME branch's number of clips: raw cosines above 0.2, clamped to [4, 28]
    (modeling_qwen.py:1827-1834); not used by the OVO-Bench wrapper, kept for the record."""
    return min(max(int((cos > 0.2).sum()), low), high)


def reaction_prompt(question: str) -> tuple[str, str]:
    """The text before and after the visual block: ``SYSTEM USER: <image>\\n{question} ASSISTANT:``."""
    before, after = f"{SYSTEM} USER: {IMAGE}\n{question} ASSISTANT:".split(IMAGE)
    return before, after
