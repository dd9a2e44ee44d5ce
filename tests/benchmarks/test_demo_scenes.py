"""The demo's generator (``stc_cli/benchmarks/demo_scenes.py``): scenes, frames and questions, each
question's answer worked out again from the pixels alone, on rendered frames of many random scenes and on
the decoded clips shipped in the package; and the shipped demo is exactly what the script makes."""

import importlib.util
import json
import random
import subprocess
import sys
from collections import Counter
from itertools import groupby
from pathlib import Path

import numpy as np
import pytest

from stc_cli.benchmarks import demo
from stc_cli.benchmarks import demo_scenes as ds

ROOT = Path(__file__).resolve().parents[2]
SEEDS = range(5000, 5300)  # not the demo's (1000-1999)


def script():
    """scripts/make_demo_data.py as a module (the scripts folder is no package)."""
    spec = importlib.util.spec_from_file_location("make_demo_data", ROOT / "scripts" / "make_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode(path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


# ---- answers from pixels: nothing below reads a Scene ---------------------------------------------------


def square(frame: np.ndarray) -> tuple[str, float]:
    """The square's colour (the palette's nearest to its pixels' mean) and its centre's x, from pixels
    clearly off the grey background."""
    off = np.abs(frame.astype(int) - ds.BACKGROUND).max(axis=2) > 50
    assert off.sum() >= 0.8 * ds.SIDE**2, "no square in the frame"
    mean = frame[off].astype(float).mean(axis=0)
    color = min(ds.PALETTE, key=lambda name: np.abs(mean - ds.PALETTE[name]).sum())
    assert np.abs(mean - ds.PALETTE[color]).max() < 25, (mean, color)  # a palette colour, not a blend
    return color, float(np.nonzero(off)[1].mean())


def where(centre: float) -> str:
    """left / middle / right by thirds of the frame; a centre near a border is an ambiguous question."""
    third = ds.SIZE / 3
    assert min(abs(centre - third), abs(centre - 2 * third)) >= 2, f"square at a border ({centre:.1f} px)"
    return "on the left" if centre < third else "on the right" if centre > 2 * third else "in the middle"


def from_pixels(frames: np.ndarray, task: str, time: float) -> str:
    """The answer to a question of ``task`` at ``time`` as a viewer of ``frames`` (2 fps) would give it.
    "Now" must hold in every frame of the last second and at ``time`` itself."""
    seen = [square(f) for f in frames[: int(np.ceil(time * ds.NATIVE_FPS))]]  # t < time
    now = [square(f) for i, f in enumerate(frames) if time - 1 <= i / ds.NATIVE_FPS <= time]
    if task in ("color", "position"):
        answers = {c for c, _ in now} if task == "color" else {where(x) for _, x in now}
        assert len(answers) == 1, f"{task} at {time} s changes within the last second: {answers}"
        return answers.pop()
    if task == "start_color":
        return seen[0][0]
    if task == "start_position":
        return where(seen[0][1])
    if task == "changes":
        colors = [c for c, _ in seen]
        every_second = colors[:: ds.NATIVE_FPS]  # what a 1 fps viewer sees: the same count
        assert (
            sum(a != b for a, b in zip(every_second, every_second[1:], strict=False))
            == len(list(groupby(colors))) - 1
        )
        return str(len(list(groupby(colors))) - 1)
    if task == "direction":
        xs = [x for _, x in seen]
        if max(xs) - min(xs) <= 1:
            return "it does not move"
        assert xs[-1] - xs[0] > 20 or xs[0] - xs[-1] > 20, xs
        return "left to right" if xs[-1] > xs[0] else "right to left"
    raise AssertionError(f"unknown task {task}")


# ---- the generator -------------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_scene_frames_and_questions():
    for seed in (1, 5000, 12345):
        a, b = random.Random(seed), random.Random(seed)
        scene = ds.sample_scene(a)
        assert scene == ds.sample_scene(b)
        assert ds.questions(scene, a) == ds.questions(scene, b)
        assert np.array_equal(ds.render(scene), ds.render(scene))
    scenes = [ds.sample_scene(random.Random(seed)) for seed in SEEDS]
    assert len(set(scenes)) == len(scenes)  # and other seeds, other scenes


def test_scenes_keep_to_their_rules():
    kinds, durations, changes, moves = Counter(), Counter(), Counter(), Counter()
    for seed in SEEDS:
        rng = random.Random(seed)
        scene = ds.sample_scene(rng)
        frames = ds.render(scene)
        assert frames.dtype == np.uint8 and frames.shape == (scene.duration * 2, 64, 64, 3)
        assert ds.MIN_SECONDS <= scene.duration <= ds.MAX_SECONDS
        assert len(scene.colors) == len(scene.xs) == scene.n_frames
        segments = [(color, len(list(run))) for color, run in groupby(scene.colors)]
        assert all(length >= ds.MIN_SEGMENT for _, length in segments)  # each colour 2 s at least
        assert len({color for color, _ in segments}) == len(segments) == scene.changes + 1 <= 4
        assert all(0 <= x <= ds.SIZE - ds.SIDE for x in scene.xs) and 0 <= scene.y <= ds.SIZE - ds.SIDE
        durations[scene.duration] += 1
        changes[scene.changes] += 1
        moves[scene.direction] += 1
        asked = ds.questions(scene, rng)
        assert [q["task"] for q in asked] == list(ds.KINDS)
        for q in asked:
            assert set(q) == {"task", "time", "question", "options", "answer"}
            assert len(q["options"]) == 4 == len(set(q["options"])) and q["answer"] in q["options"]
            assert isinstance(q["time"], float) and 2 <= q["time"] <= scene.duration
            kinds[q["task"], q["answer"]] += 1
    assert (
        set(durations) == set(range(8, 13)) and set(changes) == {0, 1, 2, 3} and set(moves) == set(ds.MOVES)
    )
    # every answer a scene can have comes up; the distractors never do
    assert {answer for task, answer in kinds if task == "direction"} == set(ds.MOVES)
    assert {answer for task, answer in kinds if task == "position"} == set(ds.POSITIONS[:3])
    assert {answer for task, answer in kinds if task == "color"} == set(ds.COLORS)


def test_sample_scene_takes_the_changes_and_direction_asked_for():
    for changes in range(4):
        for direction in ds.MOVES:
            scene = ds.sample_scene(random.Random(changes), changes=changes, direction=direction)
            assert (scene.changes, scene.direction) == (changes, direction)
    with pytest.raises(ValueError, match="no scene with 4 changes"):
        ds.sample_scene(random.Random(0), changes=4)
    with pytest.raises(ValueError, match="top to bottom"):
        ds.sample_scene(random.Random(0), direction="top to bottom")


def test_every_answer_is_what_the_rendered_pixels_show():
    for seed in SEEDS:
        rng = random.Random(seed)
        scene = ds.sample_scene(rng)
        frames = ds.render(scene)
        for q in ds.questions(scene, rng):
            assert from_pixels(frames, q["task"], q["time"]) == q["answer"], (seed, q)


def test_the_pixel_check_notices_a_wrong_answer():
    # The check above is no tautology: a frame with the colour swapped "now" fails it.
    rng = random.Random(7)
    scene = ds.sample_scene(rng, changes=0, direction=ds.LEFT_TO_RIGHT)
    color = next(q for q in ds.questions(scene, rng) if q["task"] == "color")
    frames = ds.render(scene)
    other = next(c for c in ds.COLORS if c != color["answer"])
    last = int(color["time"] * 2) - 2  # the frame a 1 fps viewer sees last
    frames[last, scene.y : scene.y + ds.SIDE, scene.xs[last] : scene.xs[last] + ds.SIDE] = ds.PALETTE[other]
    with pytest.raises(AssertionError, match="changes within the last second"):
        from_pixels(frames, "color", color["time"])


def test_place_answer_rotates_the_options_to_the_letter_asked_for():
    q = {"options": ["red", "green", "blue", "yellow"], "answer": "blue"}
    assert [ds.place_answer(q, i).index("blue") for i in range(4)] == [0, 1, 2, 3]
    assert ds.place_answer(q, 0) == ["blue", "yellow", "red", "green"]  # a rotation: the cycle kept


def test_write_clip_is_deterministic_and_decodes_to_the_frames(tmp_path):
    frames = ds.render(ds.sample_scene(random.Random(5000)))
    ds.write_clip(tmp_path / "a" / "clip.mp4", frames)
    ds.write_clip(tmp_path / "b.mp4", frames)
    assert (tmp_path / "a" / "clip.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    decoded = decode(tmp_path / "b.mp4")
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 4


def test_the_module_needs_neither_torch_nor_av_to_import():
    code = "import sys, stc_cli.benchmarks.demo_scenes; print(sorted({'torch', 'av'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_demo_tasks_are_the_generator_s_kinds():
    assert set(demo.TASKS) == set(ds.KINDS)
    assert {task: category for task, (category, _) in ds.KINDS.items()} == demo.TASKS
    assert set(demo.CATEGORIES) == set(demo.TASKS.values())


# ---- the shipped demo ----------------------------------------------------------------------------------


def test_the_shipped_demo_is_what_the_script_writes(tmp_path, monkeypatch):
    make = script()
    monkeypatch.setattr(make, "OUT", tmp_path)
    make.main()
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    shipped = sorted(p.relative_to(demo.PACKAGED) for p in demo.PACKAGED.rglob("*") if p.is_file())
    assert written == shipped and len(written) == 17
    for path in written:
        assert (tmp_path / path).read_bytes() == (demo.PACKAGED / path).read_bytes(), path
    assert (
        all(make.SEED + n in ds.DEMO_SEEDS for n in range(len(make.PLAN)))
        and make.LETTER_SEED in ds.DEMO_SEEDS
    )


def test_every_shipped_answer_is_what_the_decoded_clip_shows():
    # What the model is given: the mp4 files as decoded, compression included.
    records = json.loads((demo.PACKAGED / "demo.json").read_text())
    videos = {video: decode(demo.PACKAGED / video) for video in {r["video"] for r in records}}
    for r in records:
        answer = r["options"]["ABCD".index(r["answer"])]
        assert from_pixels(videos[r["video"]], r["task"], r["time"]) == answer, r
