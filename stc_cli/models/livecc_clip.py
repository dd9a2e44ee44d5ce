"""LiveCC's own OVO-Bench evaluation as a ``VideoModel`` (the ``livecc-ovo`` protocol).

[LiveCC] ``evaluation/ovobench/distributed_evaluate_ovobench.py``: each question gets its clip (frames
picked by the ``uniform`` rule, ``stc_cli/video.py``), resized once so that the whole clip holds about
``visual_budget`` merged tokens ([LiveCC] ``livecc_utils/video_process_patch.py:88-107``), as the video
of one user turn after the system turn; the question follows in the same turn, then the assistant's
"The answer is:\\n", and the answer is the candidate (No, Yes, 0-9, A-E, each the last token of a
newline and itself) with the largest logit.

The M-RoPE positions are those of one pass over that sequence: the video segment (system turn, user turn
up to ``<|vision_end|>``) is prefilled by ``add_frames`` and the question by ``answer``, each at explicit
positions after the last. STC: the cacher and the pruner work per temporal patch as in ``livecc.py``.
"""

from __future__ import annotations

import torch

from stc_cli.benchmarks.base import Query
from stc_cli.models.base import Step, timed
from stc_cli.models.livecc import LOGITS_PREFILL, LiveCC
from stc_cli.models.qwen2vl_frames import smart_resize

VIDEO_TURN = "<|im_start|>user\n<|vision_start|>{video}<|vision_end|>"
QUESTION_END = "{prompt}<|im_end|>\n<|im_start|>assistant\n" + LOGITS_PREFILL
CANDIDATES = ("No", "Yes", *"0123456789", *"ABCDE")  # [LiveCC] distributed_evaluate_ovobench.py:193
# merged tokens per temporal patch: livecc-utils VIDEO_MIN_PIXELS = 100 * 28 * 28, qwen-vl-utils
# VIDEO_MAX_PIXELS = 768 * 28 * 28
MIN_TOKENS, MAX_TOKENS = 100, 768


def clip_size(height: int, width: int, frames: int, budget: int, factor: int = 28) -> tuple[int, int]:
    """The resized (H, W) of a clip of ``frames`` frames under LiveCC's budget of ``budget`` merged
    tokens (``factor`` x ``factor`` pixels each): per temporal patch at most 768 tokens and
    ``budget / patches``, at least 105 (1.05 x 100), and ``smart_resize`` within [100 tokens, that]."""
    unit = factor * factor
    most = max(min(MAX_TOKENS * unit, budget * unit / frames * 2), int(MIN_TOKENS * unit * 1.05))
    return smart_resize(height, width, factor, MIN_TOKENS * unit, most)


class LiveCCClip(LiveCC):
    """``add_frames`` takes one clip's frames in one call (a fresh ``reset()`` before each clip)."""

    TEMPLATE = "livecc-clip"
    DECODINGS = ("candidate-logits", "greedy")
    takes_whole_clip = True  # the runner gives it the clip's frames in one call

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.protocol.visual_budget:
            raise ValueError(f"protocol {self.protocol.name}: one turn per clip needs a visual_budget")

    @torch.inference_mode()
    def add_frames(self, frames: torch.Tensor, times: tuple[float, ...]) -> Step:
        step = Step()
        if not len(frames):
            return step
        if self.chunk_times:
            raise ValueError(f"{self.protocol.name} takes a clip's frames in one call after reset()")
        if len(frames) % 2:  # the uniform rule gives even counts; pad as the hub processor would
            frames, times = torch.cat((frames, frames[-1:])), (*times, times[-1])
        budget = self.protocol.visual_budget
        size = clip_size(frames.shape[1], frames.shape[2], len(frames), budget, self.frames.factor)
        patches = [self._encode_patch(frames[i : i + 2], size, step) for i in range(0, len(frames), 2)]
        with timed(step, "prefill", self.device):
            features = torch.cat([patch.features for patch in patches])
            per_patch = patches[0].features.shape[0]  # one size for the whole clip
            kept = torch.cat([patch.kept + i * per_patch for i, patch in enumerate(patches)])
            grid = patches[0].grid.clone()
            grid[0, 0] = len(patches)  # one video of len(patches) temporal patches
            text = VIDEO_TURN.format(video="<|video_pad|>" * features.shape[0])
            self.chunk_times = list(zip(times[::2], times[1::2], strict=True))
            self._append(self._token_ids(text), grid, features, kept)
        return step

    def question_text(self, query: Query) -> str:
        """The rest of the user turn and the assistant's opening; decoding greedily continues from it."""
        return QUESTION_END.format(prompt=query.prompt)

    def _best_candidate(self, logits: torch.Tensor, query: Query) -> str:
        """``candidate-logits``: every one of the 17 candidates, whatever the task."""
        last = [self._ids("\n" + name)[0, -1].item() for name in CANDIDATES]
        return CANDIDATES[int(torch.argmax(logits[last]))]
