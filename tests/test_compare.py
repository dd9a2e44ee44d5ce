"""`stc compare` on run folders written by hand: every number in compare.json worked out below."""

import json

import pytest
from typer.testing import CliRunner

from stc_cli.cli import app

runner = CliRunner()

# demo tasks -> categories: color, position: real-time; start_color: backward; changes: counting/order.
TASKS = {
    "color": "real-time",
    "position": "real-time",
    "start_color": "backward",
    "changes": "counting/order",
}


def record(n, task, target, response, vit=None, prefill=None, frames=0, error=None):
    """One line of samples.jsonl, in the shape `stc eval --bench demo` writes."""
    out = {
        "id": f"demo/clip_0/{n}",
        "bench": "demo",
        "task": task,
        "category": TASKS[task],
        "video": "videos/clip_0.mp4",
        "window": [0.0, 5.0],
        "prompt": "Question: ?\nOptions:\nA. a\nB. b\nC. c\nD. d\nAnswer with the option's letter.",
        "options": ["a", "b", "c", "d"],
        "target": target,
        "extra": {},
        "question": "?",
        "response": response,
        "error": error,
    }
    if vit is not None:
        out["timings_ms"] = {"decode": 1.0, "vit": vit, "prefill": prefill, "answer": 50.0}
        out["counts"] = {"frames_encoded": frames, "visual_tokens_in": 16 * frames}
    return out


def make_run(folder, records, stc=True, cacher=True, pruner=True, protocol="stc-online", queries=4, **extra):
    folder.mkdir(parents=True)
    config = {"model": "rekv", "bench": "demo", "stc": stc, "cacher": cacher, "pruner": pruner, **extra}
    header = {
        "settings": {"config": config, "protocol": {"name": protocol, "bench": "demo"}},
        "selection": {"limit": queries, "tasks": [], "queries": queries},
        "environment": {"device_name": "test cpu"},
    }
    (folder / "run.json").write_text(json.dumps(header))
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def base_run(tmp_path, **options):
    # right: 1, 3, 4; wrong: 2.  overall 3/4 = 75; real-time 1/2 = 50, backward 100, counting/order 100.
    # vit (40 + 20 + 20 + 0) ms / (4 + 2 + 2 + 0) frames = 10 ms/frame; prefill (20 + 10 + 10 + 0) / 8 = 5.
    return make_run(
        tmp_path / "base",
        [
            record(1, "color", "A", "A", vit=40.0, prefill=20.0, frames=4),
            record(2, "position", "B", "C", vit=20.0, prefill=10.0, frames=2),
            record(3, "start_color", "C", "C", vit=20.0, prefill=10.0, frames=2),
            record(4, "changes", "D", "D", vit=0.0, prefill=0.0, frames=0),
        ],
        stc=False,
        compress="stc",  # as `stc eval --no-stc` records it: the switches say "none"
        **options,
    )


def stc_run(tmp_path):
    # right: 1, 4; wrong: 2, 3.  overall 2/4 = 50; real-time 50, backward 0, counting/order 100.
    # retention 50 / 75 = 66.67 %.  vit (30 + 15 + 15) / 8 = 7.5 ms/frame: 25 % less than 10;
    # prefill (6 + 3 + 3) / 8 = 1.5 ms/frame: 70 % less than 5.
    return make_run(
        tmp_path / "stc",
        [
            record(1, "color", "A", "A", vit=30.0, prefill=6.0, frames=4),
            record(2, "position", "B", "C", vit=15.0, prefill=3.0, frames=2),
            record(3, "start_color", "C", "A", vit=15.0, prefill=3.0, frames=2),
            record(4, "changes", "D", "(D) d", vit=0.0, prefill=0.0, frames=0),
        ],
    )


def partial_run(tmp_path):
    # 3 records of the 4 queries asked, one failed: status "partial 2/4", n_errors 1.
    # right: 1, 3 of 3 records: overall 66.67, retention 66.67 / 75 = 88.89 %.
    # real-time 1/2 = 50 (the failed one counts wrong), backward 1/1 = 100.
    # vit (12 + 12) / (4 + 4) = 3 ms/frame: 70 % less; prefill (8 + 8) / 8 = 2: 60 % less.
    return make_run(
        tmp_path / "partial",
        [
            record(1, "color", "A", "A", vit=12.0, prefill=8.0, frames=4),
            record(2, "position", "B", None, error="CUDA out of memory"),
            record(3, "start_color", "C", "C", vit=12.0, prefill=8.0, frames=4),
        ],
        pruner=False,
    )


def compare(*args):
    return runner.invoke(app, ["compare", *map(str, args)])


def test_numbers_match_the_hand_worked_values(tmp_path):
    runs = base_run(tmp_path), stc_run(tmp_path), partial_run(tmp_path)
    out = tmp_path / "out"
    result = compare(*runs, "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "compare.json").read_text())
    assert data["bench"] == "demo" and data["protocol"] == "stc-online"
    base, stc, partial = data["rows"]
    assert [row["run"] for row in data["rows"]] == ["base", "stc", "partial"]  # BASE first
    assert [row["method"] for row in data["rows"]] == ["none", "stc", "cacher"]

    assert base["overall"] == pytest.approx(75.0)
    assert base["categories"] == pytest.approx(
        {"real-time": 50.0, "backward": 100.0, "counting/order": 100.0}
    )
    assert base["retention"] == pytest.approx(100.0)
    assert base["vit_ms_per_frame"] == pytest.approx(10.0) and base["prefill_ms_per_frame"] == pytest.approx(
        5.0
    )
    assert base["vit_reduction"] == pytest.approx(0.0) and base["prefill_reduction"] == pytest.approx(0.0)
    assert (base["n_total"], base["n_errors"], base["complete"]) == (4, 0, True)

    assert stc["overall"] == pytest.approx(50.0)
    assert stc["categories"] == pytest.approx({"real-time": 50.0, "backward": 0.0, "counting/order": 100.0})
    assert stc["retention"] == pytest.approx(200 / 3)  # 66.67
    assert stc["vit_ms_per_frame"] == pytest.approx(7.5) and stc["vit_reduction"] == pytest.approx(25.0)
    assert stc["prefill_ms_per_frame"] == pytest.approx(1.5) and stc["prefill_reduction"] == pytest.approx(
        70.0
    )
    assert (stc["n_total"], stc["n_errors"], stc["complete"]) == (4, 0, True)

    assert partial["overall"] == pytest.approx(200 / 3)
    assert partial["categories"] == pytest.approx({"real-time": 50.0, "backward": 100.0})
    assert partial["retention"] == pytest.approx(800 / 9)  # 88.89
    assert partial["vit_ms_per_frame"] == pytest.approx(3.0) and partial["vit_reduction"] == pytest.approx(
        70.0
    )
    assert partial["prefill_ms_per_frame"] == pytest.approx(2.0)
    assert partial["prefill_reduction"] == pytest.approx(60.0)
    assert (partial["n_total"], partial["n_errors"], partial["complete"]) == (3, 1, False)
    assert partial["status"] == "partial 2/4"

    md = (out / "compare.md").read_text()
    lines = md.splitlines()
    assert "| Method | real-time | backward | counting/order | Overall | Retention |" in md
    assert "| stc (stc) | 50.00 | 0.00 | 100.00 | 50.00 | 66.7% | 7.50 (25.0%) | 1.50 (70.0%) |" in lines
    assert (
        "| partial (cacher) † | 50.00 | 100.00 | n/a | 66.67 | 88.9% | 3.00 (70.0%) | 2.00 (60.0%) |" in lines
    )
    assert "| base (none) BASE |" in md and "base (none) BASE †" not in md
    assert any(line.startswith("† partial: partial 2/4, 1 of 3 records failed") for line in lines)
    assert "| stc (stc) |" in result.output  # the table is printed too
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_values_that_cannot_be_computed_are_null_and_n_a(tmp_path):
    # BASE answers all wrong (accuracy 0: no retention) and has no timings (no reductions).
    base = make_run(
        tmp_path / "zero", [record(1, "color", "A", "B"), record(2, "changes", "D", "A")], queries=2
    )
    other = make_run(
        tmp_path / "other",
        [record(1, "color", "A", "A", vit=8.0, prefill=4.0, frames=2), record(2, "changes", "D", "A")],
        queries=2,
        compress="tome",
    )
    out = tmp_path / "out"
    result = compare(base, other, "--out", out)
    assert result.exit_code == 0, result.output
    text = (out / "compare.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    zero, row = json.loads(text)["rows"]
    assert zero["overall"] == 0.0 and zero["vit_ms_per_frame"] is None and zero["retention"] is None
    assert row["method"] == "tome"  # settings.config.compress wins over the STC switches
    assert row["overall"] == pytest.approx(50.0) and row["vit_ms_per_frame"] == pytest.approx(4.0)
    assert row["retention"] is None and row["vit_reduction"] is None and row["prefill_reduction"] is None
    md = (out / "compare.md").read_text()
    assert "| zero (stc) BASE | 0.00 | 0.00 | 0.00 | n/a | n/a | n/a |" in md
    assert "| other (tome) | 100.00 | 0.00 | 50.00 | n/a | 4.00 (n/a) | 2.00 (n/a) |" in md
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("bench", "error: runs of different benchmarks (base demo, other ovo)"),
        ("protocol", "error: runs of different protocols (base stc-online, other rekv)"),
    ],
)
def test_mixed_benchmarks_or_protocols_are_refused_naming_them(tmp_path, change, expected):
    base = base_run(tmp_path)
    if change == "bench":
        other = make_run(
            tmp_path / "other", [{**record(1, "color", "A", "A"), "bench": "ovo", "id": "ovo/1/0"}]
        )
    else:
        other = make_run(tmp_path / "other", [record(1, "color", "A", "A")], protocol="rekv")
    result = compare(base, other, "--out", tmp_path / "out")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert not (tmp_path / "out").exists()


def test_a_folder_without_records_is_one_error_line(tmp_path):
    result = compare(base_run(tmp_path), tmp_path / "nosuch", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nosuch'}: no such file or folder"]
