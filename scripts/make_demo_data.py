"""Writes the demo benchmark shipped in stc_cli/data/demo/: three 6-second synthetic clips and twelve
questions whose answers follow from how the clips were drawn. Run once (needs the `dev` extra for PyAV);
the outputs are committed, so users never run it.

    python scripts/make_demo_data.py
"""

import json
from pathlib import Path

import av
import numpy as np

OUT = Path(__file__).resolve().parent.parent / "stc_cli" / "data" / "demo"
FPS, FRAMES, SIZE, SIDE = 2, 12, 64, 16  # 6 s at 2 fps, 64 x 64 px, a 16 px square
COLORS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230)}
CLIPS = [("red", "left to right"), ("green", "right to left"), ("blue", "left to right")]
DIRECTIONS = ["left to right", "right to left", "top to bottom", "it does not move"]
POSITIONS = ["on the left", "in the middle", "on the right", "there is no square"]


def square_x(frame: int, direction: str) -> int:
    x = 4 + round((SIZE - SIDE - 8) * frame / (FRAMES - 1))
    return x if direction == "left to right" else SIZE - SIDE - x


def write_clip(path: Path, color: str, direction: str) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for frame in range(FRAMES):
            image = np.full((SIZE, SIZE, 3), 128, np.uint8)
            x = square_x(frame, direction)
            image[24 : 24 + SIDE, x : x + SIDE] = COLORS[color]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def position(x: int) -> str:
    centre = x + SIDE / 2
    return POSITIONS[0] if centre < SIZE / 3 else POSITIONS[2] if centre > 2 * SIZE / 3 else POSITIONS[1]


def main() -> None:
    (OUT / "videos").mkdir(parents=True, exist_ok=True)
    questions = []
    for n, (color, direction) in enumerate(CLIPS):
        video = f"videos/clip_{n}.mp4"
        write_clip(OUT / video, color, direction)
        end = FRAMES / FPS
        first, last = position(square_x(2, direction)), position(square_x(FRAMES - 1, direction))
        for k, (task, time, question, options, answer) in enumerate([
            ("color", end, "What color is the square?", ["red", "green", "blue", "yellow"], color),
            ("direction", end, "Which way does the square move?", DIRECTIONS, direction),
            ("position", 1.0, "Where is the square at the end of the video?", POSITIONS, first),
            ("position", end, "Where is the square at the end of the video?", POSITIONS, last),
        ]):
            # rotate the options so that the answers take A, B, C, D in turn: a constant answer scores 25 %
            turn = (options.index(answer) - len(questions)) % len(options)
            options = options[turn:] + options[:turn]
            questions.append({
                "id": f"clip_{n}/{k}", "video": video, "task": task, "time": time, "question": question,
                "options": options, "answer": "ABCD"[options.index(answer)],
            })
    (OUT / "demo.json").write_text(json.dumps(questions, indent=1) + "\n")


if __name__ == "__main__":
    main()
