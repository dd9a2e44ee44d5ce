import json
import math

import pytest

from stc_cli.benchmarks import mlvu
from stc_cli.benchmarks.base import MetadataError

COLORS = ["Red", "Blue", "Yellow", "White"]


def _record(video, answer, question="What color is the sweater?", candidates=COLORS):
    return {
        "video": video,
        "duration": 740.0,
        "question": question,
        "candidates": list(candidates),
        "answer": answer,
        "question_type": "x",
    }


# Unequal task sizes so that micro != macro; 3_ego holds one answer missing from its candidates.
TASK_RECORDS = {
    "1_plotQA": [_record("movie101_16.mp4", "Blue"), _record("a.mp4", "Blue"), _record("b.mp4", "Red")],
    "2_needle": [_record("c.mp4", "Blue"), _record("d.mp4", "Yellow")],
    "3_ego": [_record("e.mp4", "Green"), _record("f.mp4", "Red")],
    "4_count": [_record("g.mp4", "4", "How many?", ["1", "2", "3", "4"])],
    "5_order": [_record("h.mp4", "Blue"), _record("i.mp4", "Red")],
    "6_anomaly_reco": [_record("j.mp4", "Yellow")],
    "7_topic_reasoning": [_record("k.mp4", "Red"), _record("l.mp4", "Red")],
}

# (response, error) per query id; targets in comments.
RESPONSES = {
    "mlvu/plotQA/0": ("B) Blue", None),  # B: official B right, robust right
    "mlvu/plotQA/1": (" B", None),  # B: official wrong (no strip), robust right
    "mlvu/plotQA/2": ("A", None),  # A: both right
    "mlvu/needle/0": ("B.", None),  # B: official wrong, robust right
    "mlvu/needle/1": ("(C)", None),  # C: both right
    "mlvu/ego/1": (")", None),  # A: official wrong (empty slice), robust unparsed
    "mlvu/count/0": ("", None),  # D: official wrong, robust missing
    "mlvu/order/0": ("B", None),  # B: both right
    "mlvu/order/1": (None, None),  # A: official left out, robust missing
    "mlvu/anomaly_reco/0": ("The answer is C", None),  # C: official wrong, robust right (cue)
    "mlvu/topic_reasoning/0": ("A", None),  # A: both right
    "mlvu/topic_reasoning/1": (None, "CUDA out of memory"),  # A: official left out, robust error
}


def _write(tmp_path, task_records=TASK_RECORDS):
    folder = tmp_path / "mlvu" / "json"
    folder.mkdir(parents=True)
    for stem, records in task_records.items():
        (folder / f"{stem}.json").write_text(json.dumps(records))
    return tmp_path


def _load(tmp_path):
    with pytest.warns(UserWarning, match=r"3_ego\.json, record 0: answer 'Green'"):
        return mlvu.load_queries(_write(tmp_path))


def _records(tmp_path):
    records = []
    for query in _load(tmp_path):
        response, error = RESPONSES[query.id]
        records.append(query.to_record() | {"response": response, "error": error})
    return records


def test_queries_ids_windows_targets(tmp_path):
    queries = _load(tmp_path)
    # 3 + 2 + (2 - 1 dropped) + 1 + 2 + 1 + 2 = 12
    assert [q.id for q in queries] == list(RESPONSES)
    first = queries[0]
    assert first.video == "video/1_plotQA/movie101_16.mp4"
    assert first.window == (0.0, math.inf)
    assert first.to_record()["window"] == [0.0, None]
    assert first.options == tuple(COLORS)
    assert first.category == "MLVU-dev"
    assert [q.target for q in queries] == list("BBABCADBACAA")
    ego = [q for q in queries if q.task == "ego"]
    assert [q.id for q in ego] == ["mlvu/ego/1"]  # the index stays the record's place in its file
    assert list(mlvu.TASKS) == [
        "plotQA",
        "needle",
        "ego",
        "count",
        "order",
        "anomaly_reco",
        "topic_reasoning",
    ]


def test_prompt_is_the_official_template(tmp_path):
    assert _load(tmp_path)[0].prompt == (
        "Question: What color is the sweater?\n"
        "Options:\n"
        "(A) Red\n"
        "(B) Blue\n"
        "(C) Yellow\n"
        "(D) White\n"
        "Only give the best option."
    )


def test_prompt_rstrips_the_options_block():
    assert (
        mlvu.prompt("Q?", ["x", "y  "]) == "Question: Q?\nOptions:\n(A) x\n(B) y\nOnly give the best option."
    )


@pytest.mark.parametrize(
    ("pred", "right"),
    [("B) Blue", True), ("B", True), (" B", False), ("B.", False), (")", False), ("", False), ("(B)", True)],
)
def test_check_ans(pred, right):
    assert mlvu.check_ans(pred, "B") is right


def test_official_score(tmp_path):
    report = mlvu.score(_records(tmp_path), "official")
    # plotQA 2/3, needle 1/2, ego 0/1, count 0/1, order 1/1 (None left out), anomaly_reco 0/1,
    # topic_reasoning 1/1 (error left out)
    assert report.tasks == pytest.approx(
        {
            "plotQA": 200 / 3,
            "needle": 50.0,
            "ego": 0.0,
            "count": 0.0,
            "order": 100.0,
            "anomaly_reco": 0.0,
            "topic_reasoning": 100.0,
        }
    )
    # M-Avg = (2/3 + 1/2 + 0 + 0 + 1 + 0 + 1) / 7 * 100 = (19/6) / 7 * 100 = 45.238...
    assert report.overall == pytest.approx(1900 / 42)
    assert report.categories == {"MLVU-dev": pytest.approx(1900 / 42)}
    assert report.task_counts == {
        "plotQA": 3,
        "needle": 2,
        "ego": 1,
        "count": 1,
        "order": 1,
        "anomaly_reco": 1,
        "topic_reasoning": 1,
    }
    assert (report.n_total, report.n_scored) == (12, 10)
    assert (report.n_missing, report.n_errors, report.n_unparsed) == (1, 1, 0)
    # micro = 5 right of 10 scored = 50.00, unlike the macro
    assert "micro accuracy 50.00 (5 of 10)" in report.notes[0]
    assert any("left out" in note for note in report.notes)


def test_robust_score(tmp_path):
    report = mlvu.score(_records(tmp_path), "robust")
    # plotQA 3/3, needle 2/2, ego 0/1 (unparsed), count 0/1 (""), order 1/2, anomaly_reco 1/1,
    # topic_reasoning 1/2 (error counts wrong)
    assert report.tasks == pytest.approx(
        {
            "plotQA": 100.0,
            "needle": 100.0,
            "ego": 0.0,
            "count": 0.0,
            "order": 50.0,
            "anomaly_reco": 100.0,
            "topic_reasoning": 50.0,
        }
    )
    # M-Avg = (100 + 100 + 0 + 0 + 50 + 100 + 50) / 7 = 400 / 7 = 57.142...
    assert report.overall == pytest.approx(400 / 7)
    assert (report.n_total, report.n_scored) == (12, 12)
    assert (report.n_missing, report.n_errors, report.n_unparsed) == (2, 1, 1)
    # micro = (3 + 2 + 0 + 0 + 1 + 1 + 1) / 12 = 8 / 12 = 66.67
    assert "micro accuracy 66.67 (8 of 12)" in report.notes[0]


def test_macro_over_tasks_present(tmp_path):
    records = [r for r in _records(tmp_path) if r["task"] in ("plotQA", "needle")]
    report = mlvu.score(records, "official")
    # (2/3 + 1/2) / 2 * 100 = 58.33...
    assert report.overall == pytest.approx((200 / 3 + 50) / 2)
    assert "only 2 of 7 tasks have scored records" in report.notes


def test_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="--mode strict is not defined for mlvu; use one of official, "):
        mlvu.score([], "strict")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_missing_task_file(tmp_path):
    records = dict(TASK_RECORDS)
    del records["5_order"]
    with pytest.raises(MetadataError, match=r"json/5_order\.json: MLVU task file not found"):
        mlvu.load_queries(_write(tmp_path, records))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_record_missing_a_field(tmp_path):
    records = dict(TASK_RECORDS)
    records["4_count"] = [{"video": "g.mp4", "question": "How many?", "answer": "4"}]
    with pytest.raises(MetadataError, match=r"4_count\.json, record 0: missing field\(s\) candidates"):
        mlvu.load_queries(_write(tmp_path, records))


def test_unreadable_json(tmp_path):
    _write(tmp_path)
    (tmp_path / "mlvu" / "json" / "2_needle.json").write_text("{not json")
    with pytest.raises(MetadataError, match=r"2_needle\.json: cannot read it as JSON"):
        mlvu.load_queries(tmp_path)
