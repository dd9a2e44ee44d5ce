"""The synthetic scenes of the demo benchmark, and the one generator of its clips and questions: the
clips shipped in ``stc_cli/data/demo/`` (``scripts/make_demo_data.py``) and the training videos of the
demo model come from here, so that both ask the same things in the same words.

A scene is a grey 64 x 64 frame with one coloured square (red, green, blue or yellow) that moves left to
right, right to left or stays where it is, and changes colour 0 to 3 times; 8 to 12 seconds at
``NATIVE_FPS``. Every question's answer follows from the scene's script (``Scene``), never from chance:

- real-time, at a ``time`` inside the clip: ``color`` (what colour is the square now?) and ``position``
  (on the left, in the middle or on the right now?);
- backward, at the end: ``start_color`` and ``start_position`` (the colour and the place at the start);
- counting/order, at the end: ``changes`` (how many times the colour changed) and ``direction`` (which
  way the square moves).

The model sees the clip from 0 up to ``time`` seconds (the end excluded: 1 frame per second under the
default protocol, the last at ``time - 1``). "Now" is the state over the last second and at ``time``
itself, the same in every frame there, and a square counted "on the left" or anywhere else is at least
``MARGIN`` pixels clear of the region's borders, so that no question is ambiguous at 1 or 2 fps. Each
colour lasts at least two seconds, so that a model at 1 fps sees every change.

Seeds: the shipped demo clip ``n`` is ``sample_scene(random.Random(1000 + n))``; seeds 1000 to 1999 are
the demo's (``DEMO_SEEDS``). Training data must use other seeds, so that a model never trains on the
clips it is scored on.

numpy only; PyAV is imported by ``write_clip`` alone (the ``dev`` extra).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NATIVE_FPS = 2  # frames per second of the clips
SIZE = 64  # frame width and height, px
SIDE = 20  # the square's side, px (about 17 px at the model's 56 x 56)
BACKGROUND = 128  # grey
PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 60, 230),
    "yellow": (235, 215, 30),
}
COLORS = tuple(PALETTE)
LEFT_TO_RIGHT, RIGHT_TO_LEFT, STILL = "left to right", "right to left", "it does not move"
MOVES = (LEFT_TO_RIGHT, RIGHT_TO_LEFT, STILL)
DIRECTIONS = (LEFT_TO_RIGHT, RIGHT_TO_LEFT, STILL, "top to bottom")  # the last: an option, never a scene
POSITIONS = ("on the left", "in the middle", "on the right", "there is no square")  # the last: never
COUNTS = ("0", "1", "2", "3")
MIN_SECONDS, MAX_SECONDS = 8, 12
MIN_SEGMENT = 2 * NATIVE_FPS  # native frames a colour lasts at least (2 s: two frames at 1 fps)
MARGIN = 3  # px between the square's centre and a region border, at least, where a position is asked
DEMO_SEEDS = range(1000, 2000)  # the shipped demo's; training must use others

# Question kinds (the demo's task names), their category and wording, in the order questions() returns.
KINDS = {
    "color": ("real-time", "What color is the square now?"),
    "position": ("real-time", "Where is the square now?"),
    "start_color": ("backward", "What color was the square at the start of the video?"),
    "start_position": ("backward", "Where was the square at the start of the video?"),
    "changes": ("counting/order", "How many times did the square change color?"),
    "direction": ("counting/order", "Which way does the square move?"),
}
_OPTIONS = {
    "color": COLORS,
    "position": POSITIONS,
    "start_color": COLORS,
    "start_position": POSITIONS,
    "changes": COUNTS,
    "direction": DIRECTIONS,
}
# Where a square that stays or where a moving one starts and ends: its left edge (px), well inside a region.
_STILL_X = ((2, 6), (19, 25), (38, 42))  # centres 12-16, 29-35, 48-52: left, middle, right
_START_X, _END_X = (2, 6), (38, 42)


@dataclass(frozen=True)
class Scene:
    """A clip's script: per native frame, the square's colour (a ``PALETTE`` name) and left edge (px);
    its top edge (px, the same in every frame), its direction (one of ``MOVES``) and its length."""

    duration: int  # seconds
    colors: tuple[str, ...]
    xs: tuple[int, ...]
    y: int
    direction: str

    @property
    def n_frames(self) -> int:
        return self.duration * NATIVE_FPS

    @property
    def changes(self) -> int:
        """How many times the colour changes."""
        return sum(a != b for a, b in zip(self.colors, self.colors[1:], strict=False))

    def region(self, frame: int) -> str | None:
        """Where the square is at ``frame`` (one of ``POSITIONS[:3]``), or None within ``MARGIN`` px of a
        region border (its centre's x against the thirds of the frame)."""
        return region_of(self.xs[frame] + SIDE / 2)


def region_of(centre: float) -> str | None:
    """``POSITIONS[:3]`` by the square's centre x, None within ``MARGIN`` px of a border."""
    for border in (SIZE / 3, 2 * SIZE / 3):
        if abs(centre - border) < MARGIN:
            return None
    return POSITIONS[0] if centre < SIZE / 3 else POSITIONS[2] if centre > 2 * SIZE / 3 else POSITIONS[1]


def sample_scene(rng: random.Random, *, changes: int | None = None, direction: str | None = None) -> Scene:
    """A random scene: 8-12 s, 0-3 colour changes at random moments (all its colours different, each held
    at least ``MIN_SEGMENT`` frames), moving or not. ``changes`` and ``direction`` fix those two (the
    shipped demo spreads its answers evenly with them); otherwise they are drawn too."""
    duration = rng.randint(MIN_SECONDS, MAX_SECONDS)
    n = duration * NATIVE_FPS
    changes = rng.randint(0, len(COUNTS) - 1) if changes is None else changes
    direction = rng.choice(MOVES) if direction is None else direction
    if changes not in range(len(COUNTS)) or direction not in MOVES:
        raise ValueError(f"no scene with {changes} changes moving {direction!r}")
    colors = rng.sample(COLORS, changes + 1)
    # Segment lengths: MIN_SEGMENT each plus a random share of the spare frames (stars and bars).
    spare = n - MIN_SEGMENT * (changes + 1)
    bars = sorted(rng.sample(range(spare + changes), changes))
    extras = [b - a - 1 for a, b in zip([-1, *bars], [*bars, spare + changes], strict=True)]
    per_frame = [c for c, extra in zip(colors, extras, strict=True) for _ in range(MIN_SEGMENT + extra)]
    if direction == STILL:
        x = rng.randint(*rng.choice(_STILL_X))
        xs = [x] * n
    else:
        start, end = rng.randint(*_START_X), rng.randint(*_END_X)
        if direction == RIGHT_TO_LEFT:
            start, end = end, start
        xs = [round(start + (end - start) * i / (n - 1)) for i in range(n)]
    y = rng.randint(8, SIZE - SIDE - 8)
    return Scene(duration=duration, colors=tuple(per_frame), xs=tuple(xs), y=y, direction=direction)


def render(scene: Scene) -> np.ndarray:
    """The scene's frames: uint8 RGB, ``[n_frames, SIZE, SIZE, 3]``."""
    frames = np.full((scene.n_frames, SIZE, SIZE, 3), BACKGROUND, np.uint8)
    for i, (color, x) in enumerate(zip(scene.colors, scene.xs, strict=True)):
        frames[i, scene.y : scene.y + SIDE, x : x + SIDE] = PALETTE[color]
    return frames


def now_frames(scene: Scene, time: float) -> range:
    """The native frames a question at ``time`` calls "now": those of the last second, and ``time``'s own."""
    last = min(round(time * NATIVE_FPS), scene.n_frames - 1)
    return range(max(0, round((time - 1) * NATIVE_FPS)), last + 1)


def questions(scene: Scene, rng: random.Random) -> list[dict]:
    """One question of each kind (``KINDS`` order): ``{task, time, question, options, answer}``, the
    answer an option's text, the options in a random order. Real-time questions are asked at a whole
    second from 2 s to the end where the answer holds over all of ``now_frames`` (there always is one);
    the others at the end."""
    end = scene.duration
    times = range(2, end + 1)
    colour_times = [t for t in times if len({scene.colors[i] for i in now_frames(scene, t)}) == 1]
    place_times = [
        t for t in times if None not in (regions := {scene.region(i) for i in now_frames(scene, t)})
        and len(regions) == 1
    ]  # fmt: skip
    at_color, at_place = rng.choice(colour_times), rng.choice(place_times)
    asked = {
        "color": (at_color, scene.colors[now_frames(scene, at_color)[0]]),
        "position": (at_place, scene.region(now_frames(scene, at_place)[0])),
        "start_color": (end, scene.colors[0]),
        "start_position": (end, scene.region(0)),
        "changes": (end, str(scene.changes)),
        "direction": (end, scene.direction),
    }
    out = []
    for task, (time, answer) in asked.items():
        options = list(_OPTIONS[task])
        rng.shuffle(options)
        question = KINDS[task][1]
        out.append(
            {"task": task, "time": float(time), "question": question, "options": options, "answer": answer}
        )
    return out


def place_answer(question: dict, index: int) -> list[str]:
    """``question``'s options rotated so that its answer is option ``index`` (0 is A)."""
    options = list(question["options"])
    turn = (options.index(question["answer"]) - index) % len(options)
    return options[turn:] + options[:turn]


def write_clip(path, frames: np.ndarray) -> None:
    """An mp4 (MPEG-4 part 2, yuv420p, ``NATIVE_FPS``) of ``frames`` (uint8 RGB ``[n, h, w, 3]``); makes
    the folder. Deterministic: the same frames give the same bytes."""
    import av

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=NATIVE_FPS)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        # The encoder's default rate leaves colour blocks off by up to 150 levels after a change; this
        # keeps every pixel of the square within 20 of its colour, at about 3 KB a clip.
        stream.bit_rate = 400_000
        for image in frames:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
