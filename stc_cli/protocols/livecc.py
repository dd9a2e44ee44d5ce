"""LiveCC (Qwen2-VL) protocols: LiveCC's own OVO-Bench evaluation, and its live streaming loop.

[LiveCC] is github showlab/livecc at fdaa91e (``livecc-utils`` inside it, with qwen-vl-utils 0.0.11).
"""

from __future__ import annotations

from stc_cli.protocols.base import Protocol

_EVAL = "[LiveCC] evaluation/ovobench/distributed_evaluate_ovobench.py"
_TRANSFER = "[LiveCC] evaluation/ovobench/transfer_annotation_format.py"
_PATCH = "[LiveCC] livecc-utils/src/livecc_utils/video_process_patch.py"

LIVECC_OVO = Protocol(
    name="livecc-ovo",
    model="livecc",
    bench="ovo",
    summary="LiveCC's own OVO-Bench evaluation: one turn per clip, the answer read from 17 candidate logits",
    comparable="LiveCC's OVO-Bench numbers and the STC README's LiveCC rows (57.0 / 56.4 / 59.7 real-time / "
    "backward / forward, + STC-Cacher 53.8 / 54.2 / 57.3): stc score --mode official",
    fps=2.0,
    sampling="uniform",
    max_frames=480,
    visual_budget=24576,
    schedule="clip",
    window="livecc-ovo",
    user_text="livecc-ovo",
    template="livecc-clip",
    decoding="candidate-logits",
    max_new_tokens=32,
    stop="eos+im_end",
    reading="as-is",
    scorer="official",
    sources=(
        ("fps", f"{_EVAL}:51-54 (qwen-vl-utils FPS = 2)"),
        ("sampling", f"{_EVAL}:26-59 (_read_may1fps_video_decord)"),
        ("max_frames", f"{_PATCH}:14 (FPS_MAX_FRAMES = 480)"),
        ("visual_budget", f"{_PATCH}:11,88-107 (_spatial_resize_video: 24576 * 28 * 28 pixels per clip)"),
        ("schedule", f"{_EVAL}:87-111 (a clip read afresh for every question)"),
        ("window", f"{_TRANSFER}:8,30,45,54-55 (CRR from ask_time; to realtime, not its ceiling)"),
        ("user_text", f"{_TRANSFER} and {_EVAL}:91-94,135 (LiveCC's rewritten prompts)"),
        ("template", f"{_EVAL}:89-116,198 (system turn, user turn: video then text, 'The answer is:\\n')"),
        ("decoding", f"{_EVAL}:126-127,142,193 (argmax over No, Yes, 0-9, A-E, each after a newline)"),
        ("scorer", f"{_EVAL}:159-182 (prefix match; mean of task means per category)"),
    ),
)


def _stream(bench: str) -> Protocol:
    return Protocol(
        name="livecc-stream",
        model="livecc",
        bench=bench,
        summary="LiveCC's live loop: one user turn 'Time=t0-t1s' per second of video on a growing KV cache",
        comparable="not comparable with LiveCC's published numbers (its live loop, not its evaluation)",
        fps=2.0,
        template="livecc-turns",
        decoding="greedy",
        max_new_tokens=32,
        stop="eos+im_end",
        reading="as-is",
        scorer="robust",
        sources=(
            ("fps", "[LiveCC] inference.md, demo/infer.py: 2 fps, a turn per 2-frame (1 s) chunk"),
            (
                "template",
                "[LiveCC] demo/infer.py: 'Time={t0:.1f}-{t1:.1f}s' turns, the question one more turn",
            ),
            ("max_new_tokens", "[LiveCC] evaluation scripts: max_new_tokens=32"),
        ),
    )


PRESETS = (
    LIVECC_OVO,
    *(_stream(bench) for bench in ("ovo", "streamingbench", "mlvu", "egoschema", "videomme", "demo")),
)  # the first preset of a (model, benchmark) pair is its default
