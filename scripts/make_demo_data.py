"""Writes the demo benchmark shipped in stc_cli/data/demo/: 16 synthetic clips (8-12 s at 2 fps) and 64
four-option questions, from ``stc_cli/benchmarks/demo_scenes.py`` (the generator the demo model trains
on, with other seeds). Deterministic: clip ``n`` is drawn from ``random.Random(1000 + n)``. Run once
(needs the `dev` extra for PyAV); the outputs are committed, so users never run it.

    python scripts/make_demo_data.py

``PLAN`` fixes each clip's number of colour changes, its direction and the four question kinds it is
asked, so that the shipped set is even: 12 questions of each backward and counting/order kind, 8 of each
real-time kind (every task's count divisible by 4); colour changes 0, 1, 2 and 3 three times each among
the `changes` questions, each direction four times among the `direction` questions; `start_color` only
on clips whose colour changes. Within each task the answer letters are A, B, C and D equally often, in a
shuffled order (seed 1999), so that a constant letter scores 25 %.
"""

import json
import random
from collections import Counter
from pathlib import Path

from stc_cli.benchmarks.demo_scenes import (
    LEFT_TO_RIGHT,
    RIGHT_TO_LEFT,
    STILL,
    place_answer,
    questions,
    render,
    sample_scene,
    write_clip,
)

OUT = Path(__file__).resolve().parent.parent / "stc_cli" / "data" / "demo"
SEED, LETTER_SEED = 1000, 1999  # demo clip n: SEED + n; both inside demo_scenes.DEMO_SEEDS
LR, RL, ST = LEFT_TO_RIGHT, RIGHT_TO_LEFT, STILL
C, P, SC, SP, N, D = "color", "position", "start_color", "start_position", "changes", "direction"
# Per clip: colour changes, direction, the kinds asked (in demo_scenes.KINDS order).
PLAN = [
    (0, LR, (P, SP, N, D)),
    (1, RL, (C, SC, N, D)),
    (2, ST, (SC, SP, N, D)),
    (3, LR, (C, SC, N, D)),
    (0, RL, (P, SP, N, D)),
    (1, ST, (SC, SP, N, D)),
    (2, LR, (C, SC, SP, N)),
    (3, RL, (SC, SP, N, D)),
    (0, ST, (P, SP, N, D)),
    (1, LR, (C, SC, SP, N)),
    (2, RL, (C, SC, SP, N)),
    (3, ST, (P, SC, SP, N)),
    (0, LR, (C, P, SP, D)),
    (1, RL, (C, P, SC, D)),
    (2, ST, (C, P, SC, D)),
    (3, LR, (P, SC, SP, D)),
]


def main() -> None:
    clips = []
    for n, (changes, direction, kinds) in enumerate(PLAN):
        rng = random.Random(SEED + n)
        scene = sample_scene(rng, changes=changes, direction=direction)
        video = f"videos/clip_{n}.mp4"
        write_clip(OUT / video, render(scene))
        clips.append((n, video, [q for q in questions(scene, rng) if q["task"] in kinds]))
    counts = Counter(q["task"] for _, _, asked in clips for q in asked)
    assert all(count % 4 == 0 for count in counts.values()), counts
    rng = random.Random(LETTER_SEED)
    letters = {
        task: rng.sample(list(range(4)) * (counts[task] // 4), counts[task]) for task in sorted(counts)
    }
    records = []
    for n, video, asked in clips:
        for k, question in enumerate(asked):
            options = place_answer(question, letters[question["task"]].pop())
            records.append({
                "id": f"clip_{n}/{k}", "video": video, "task": question["task"], "time": question["time"],
                "question": question["question"], "options": options,
                "answer": "ABCD"[options.index(question["answer"])],
            })  # fmt: skip
    (OUT / "demo.json").write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
