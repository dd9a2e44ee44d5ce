import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from stc_cli.benchmarks import demo
from stc_cli.benchmarks.base import MetadataError
from stc_cli.cli import app

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path):
    result = runner.invoke(app, ["download", "demo", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    return tmp_path


def test_download_copies_it_and_check_opens_every_video(data_dir):
    result = runner.invoke(app, ["check", "--bench", "demo", "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tasks"] == {"color": 3, "direction": 3, "position": 6} and report["n_videos"] == 3


def test_queries_follow_how_the_clips_were_drawn(data_dir):
    queries = {q.id: q for q in demo.load_queries(data_dir)}
    assert len(queries) == 12
    # clip_1 is a green square moving right to left: at 1 s it is still on the right, at 6 s on the left.
    # The options are rotated so that the answers take A, B, C, D in turn (answers: green, right to left,
    # on the right, on the left).
    assert [queries[f"demo/clip_1/{k}"].target for k in range(4)] == ["A", "B", "C", "D"]
    assert queries["demo/clip_1/0"].options == ("green", "blue", "yellow", "red")
    assert queries["demo/clip_1/3"].options == (
        "in the middle",
        "on the right",
        "there is no square",
        "on the left",
    )
    assert queries["demo/clip_1/2"].window == (0.0, 1.0) and queries["demo/clip_1/3"].window == (0.0, 6.0)
    assert queries["demo/clip_0/0"].prompt == (
        "Question: What color is the square?\nOptions:\nA. red\nB. green\nC. blue\nD. yellow\n"
        "Answer with the option's letter."
    )
    assert queries["demo/clip_0/0"].video == "videos/clip_0.mp4"


def test_the_answer_key_is_balanced_so_a_constant_answer_scores_chance():
    queries = demo.load_queries(demo.PACKAGED.parent)
    assert Counter(q.target for q in queries) == {"A": 3, "B": 3, "C": 3, "D": 3}


def test_score(data_dir):
    queries = demo.load_queries(data_dir)
    records = [{**q.to_record(), "response": q.target, "error": None} for q in queries]
    records[0]["response"] = "The answer is D"  # color wrong
    records[1]["response"] = None  # direction missing
    report = demo.score(records, "robust")
    # color 2/3, direction 2/3, position 6/6; overall 10/12.
    assert report.tasks == pytest.approx({"color": 200 / 3, "direction": 200 / 3, "position": 100.0})
    assert report.overall == pytest.approx(250 / 3) and (report.n_missing, report.n_unparsed) == (1, 0)


def test_missing_or_broken_metadata(tmp_path):
    with pytest.raises(MetadataError, match="`stc download demo` puts it there"):
        demo.load_queries(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "demo.json").write_text('[{"id": "x"}]')
    with pytest.raises(MetadataError, match="record 0: malformed record"):
        demo.load_queries(tmp_path)
