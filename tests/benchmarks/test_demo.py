import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from stc_cli.benchmarks import demo
from stc_cli.benchmarks.base import MetadataError
from stc_cli.cli import app
from tests.demo_small import DATA_DIR as DEMO_SMALL

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path):
    result = runner.invoke(app, ["download", "demo", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    return tmp_path


PER_TASK = {
    "color": 8,
    "direction": 12,
    "position": 8,
    "start_color": 12,
    "start_position": 12,
    "changes": 12,
}


def answer(query) -> str:
    """The text of the option the target letter names."""
    return query.options["ABCD".index(query.target)]


def test_download_copies_it_and_check_opens_every_video(data_dir):
    result = runner.invoke(app, ["check", "--bench", "demo", "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tasks"] == PER_TASK and report["n_videos"] == 16


def test_sixteen_clips_of_four_questions_each_task_8_or_12_times():
    queries = demo.load_queries(demo.PACKAGED.parent)
    assert len(queries) == 64 and Counter(q.task for q in queries) == PER_TASK
    assert Counter(q.category for q in queries) == {"real-time": 16, "backward": 24, "counting/order": 24}
    by_clip = Counter(q.video for q in queries)
    assert by_clip == {f"videos/clip_{n}.mp4": 4 for n in range(16)}
    assert [q.id for q in queries] == [f"demo/clip_{n}/{k}" for n in range(16) for k in range(4)]
    assert all(len(q.options) == 4 for q in queries)
    # clips of 8 to 12 s: 8 to 12 frames each at 1 fps, 166 in all (the stream encodes each once)
    ends = {q.video: q.window[1] for q in queries if q.task == "direction" or q.task == "changes"}
    assert (
        len(ends) == 16 and set(ends.values()) <= {8.0, 9.0, 10.0, 11.0, 12.0} and sum(ends.values()) == 166
    )
    # the evenly spread answers make_demo_data.py plans
    texts = lambda task: Counter(answer(q) for q in queries if q.task == task)  # noqa: E731
    assert texts("changes") == {"0": 3, "1": 3, "2": 3, "3": 3}
    assert texts("direction") == {"left to right": 4, "right to left": 4, "it does not move": 4}
    assert texts("color") == {"red": 2, "green": 2, "blue": 2, "yellow": 2}


def test_queries_follow_how_the_clips_were_drawn(data_dir):
    queries = {q.id: q for q in demo.load_queries(data_dir)}
    # clip_3: 11 s, a square moving left to right, blue for 3.5 s, red to 7 s, green to 9 s, then yellow.
    clip_3 = [queries[f"demo/clip_3/{k}"] for k in range(4)]
    assert [(q.task, q.window, answer(q)) for q in clip_3] == [
        ("color", (0.0, 6.0), "red"),
        ("start_color", (0.0, 11.0), "blue"),
        ("changes", (0.0, 11.0), "3"),
        ("direction", (0.0, 11.0), "left to right"),
    ]
    assert clip_3[2].options == ("2", "1", "3", "0") and clip_3[2].target == "C"
    assert clip_3[0].prompt == (
        "Question: What color is the square now?\nOptions:\nA. green\nB. red\nC. yellow\nD. blue\n"
        "Answer with the option's letter."
    )
    assert clip_3[0].video == "videos/clip_3.mp4" and clip_3[0].category == "real-time"
    # clip_2: 12 s, a square that stays in the middle, yellow, red from 3 s, blue from 5.5 s.
    assert [(q.task, answer(q)) for q in (queries[f"demo/clip_2/{k}"] for k in range(4))] == [
        ("start_color", "yellow"),
        ("start_position", "in the middle"),
        ("changes", "2"),
        ("direction", "it does not move"),
    ]
    # clip_13: 11 s, right to left, blue for 8.5 s, then yellow; at its end on the left, at 2 s still blue.
    assert [(q.task, q.window[1], answer(q)) for q in (queries[f"demo/clip_13/{k}"] for k in range(4))] == [
        ("color", 2.0, "blue"),
        ("position", 11.0, "on the left"),
        ("start_color", 11.0, "blue"),
        ("direction", 11.0, "right to left"),
    ]
    assert queries["demo/clip_13/2"].category == "backward"


def test_the_answer_key_is_balanced_so_a_constant_answer_scores_chance():
    queries = demo.load_queries(demo.PACKAGED.parent)
    assert Counter(q.target for q in queries) == {"A": 16, "B": 16, "C": 16, "D": 16}
    for task, count in PER_TASK.items():  # and within every task
        letters = Counter(q.target for q in queries if q.task == task)
        assert letters == dict.fromkeys("ABCD", count // 4), task


def test_score(data_dir):
    queries = demo.load_queries(data_dir)
    records = [{**q.to_record(), "response": q.target, "error": None} for q in queries]
    records[0]["response"] = "The answer is A"  # clip_0/0, position (C): wrong
    records[1]["response"] = None  # clip_0/1, start_position: missing
    records[2]["response"] = "no idea"  # clip_0/2, changes: unparsed
    report = demo.score(records, "robust")
    assert report.tasks == pytest.approx({
        "color": 100.0, "direction": 100.0, "position": 700 / 8, "start_color": 100.0,
        "start_position": 1100 / 12, "changes": 1100 / 12,
    })  # fmt: skip
    assert list(report.categories) == ["real-time", "backward", "counting/order"]
    assert report.categories == pytest.approx({
        "real-time": 1500 / 16, "backward": 2300 / 24, "counting/order": 2300 / 24
    })  # fmt: skip
    assert report.overall == pytest.approx(6100 / 64) and (report.n_missing, report.n_unparsed) == (1, 1)


def test_the_first_demo_still_loads_and_scores():
    # 3 clips, 12 questions, tasks color, direction and position (tests/demo_small.py)
    queries = demo.load_queries(DEMO_SMALL)
    assert Counter(q.category for q in queries) == {"real-time": 9, "counting/order": 3}
    records = [{**q.to_record(), "response": q.target, "error": None} for q in queries]
    report = demo.score(records, "robust")
    assert report.categories == {"real-time": 100.0, "counting/order": 100.0} and report.overall == 100.0


def test_missing_or_broken_metadata(tmp_path):
    with pytest.raises(MetadataError, match="`stc download demo` puts it there"):
        demo.load_queries(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "demo.json").write_text('[{"id": "x"}]')
    with pytest.raises(MetadataError, match="record 0: malformed record"):
        demo.load_queries(tmp_path)
