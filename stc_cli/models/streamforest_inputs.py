"""What StreamForest puts around its vision tower, as upstream computes it: the fixed sin-cos position
tables added to every frame's tokens ([SF] ``llava/model/multimodal_projector/projector_FSTW_PEMF.py:35-90,
185-233,293-295``), the ChatML prompt with its time message ([SF] ``lmms_eval/models/streamforest.py:313,
333-334,449-467``, ``llava/conversation.py:435-444``) and its frame choice, ``dynamic_fps1`` ([SF]
``llava/video_utils.py:102-169,254-300``). [SF] is github MCG-NJU/StreamForest at 0915f49.
"""

from __future__ import annotations

import torch

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"  # [SF] llava/conversation.py:435-444
USER, ASSISTANT = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"
IMAGE = "<image>"
# [SF] lmms_eval/models/streamforest.py:333-334 (time_msg short_online_v2), :465 ('<image>\n' + rstrip + ' ')
TIME_MESSAGE = (
    "\nThe video contains {frames} frames sampled from the past {span:.1f} seconds ago ({first:.1f}s of the "
    "entire video) up to the present moment ({last:.1f}s of the entire video). "
)
TIME_WINDOW = 512  # frames before the temporal table repeats (projector_FSTW_PEMF.py:185,225-233)


def sincos(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``[M] -> [M, dim]``: ``sin(p * w)`` then ``cos(p * w)``, ``w_i = 10000 ** (-i / (dim / 2))``, in
    float32 as upstream's numpy (projector_FSTW_PEMF.py:150-167)."""
    omega = torch.arange(dim // 2, dtype=torch.float32) / (dim / 2.0)
    out = positions.float()[:, None] * (1.0 / 10000**omega)[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


def spatial_table(width: int, side: int) -> torch.Tensor:
    """``[side * side, width]`` in raster order: zeros in the first quarter of the channels, then the 2-D
    table over the rest, its first half encoding the column and its second the row (numpy's meshgrid puts
    the column first, projector_FSTW_PEMF.py:35-62,134-147)."""
    spatial = width // 4 * 3
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    table = torch.cat([sincos(cols.reshape(-1), spatial // 2), sincos(rows.reshape(-1), spatial // 2)], dim=1)
    return torch.cat([torch.zeros(side * side, width - spatial), table], dim=1)


def temporal_table(width: int, frames: int = TIME_WINDOW) -> torch.Tensor:
    """``[frames, width]``: the frame index's 1-D table in the first quarter of the channels, zeros after
    (projector_FSTW_PEMF.py:67-90)."""
    temporal = width // 4
    return torch.cat([sincos(torch.arange(frames), temporal), torch.zeros(frames, width - temporal)], dim=1)


def time_message(times: tuple[float, ...]) -> str:
    """StreamForest's ``short_online_v2`` text for frames at ``times`` (seconds of the video): each time
    rounded to 0.1 s first, as upstream's ``str(round(f / fps, 1))`` ([SF] lmms_eval/models/
    streamforest.py:313; the frame indices count from the video's start, video_utils.py:283-290)."""
    seconds = [round(t, 1) for t in times]
    return TIME_MESSAGE.format(
        frames=len(seconds), span=seconds[-1] - seconds[0], first=seconds[0], last=seconds[-1]
    )


def prompt(times: tuple[float, ...], context: str) -> str:
    """The whole prompt, ``<image>`` where the visual memory goes (lmms_eval/models/streamforest.py:465)."""
    return f"{SYSTEM}{USER}{IMAGE}\n{time_message(times).rstrip()} {context}{ASSISTANT}"
