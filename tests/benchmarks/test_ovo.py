"""OVO-Bench: loader, prompts, both scorers and the official result file, on hand-made fixtures.

fixtures/ovo/ovo_bench_new.json holds one or two records per task in the upstream shape (ids 0-12: EPM x2
with 4 and 2 options, HLD with 5, STU with 2, REC with 3 probes, SSR with 3, CRR with 5).
fixtures/ovo/upstream_result.json is a hand-written official result file with the responses of RESPONSES.
"""

import json
import shutil
from pathlib import Path

import pytest

from stc_cli.benchmarks import ovo
from stc_cli.benchmarks.base import MetadataError

FIXTURES = Path(__file__).parent / "fixtures" / "ovo"

# id -> (response, error). Official / robust point and why, per line.
RESPONSES = {
    "ovo/0": (["C"], None),  # EPM gt C: list, element test -> 1 / 1
    "ovo/1": ("Answer: B", None),  # EPM gt A: "A" in "Answer: B" -> 1 / robust reads B -> 0
    "ovo/2": ("b", None),  # ASI gt B: case-sensitive -> 0 / 1
    "ovo/3": ("E", None),  # HLD gt E (5 options) -> 1 / 1
    "ovo/4": ("B", None),  # OCR gt B -> 1 / 1
    "ovo/5": (None, None),  # ACR: missing -> 0 / 0 (missing)
    "ovo/6": ("ABCD", None),  # ATR gt D: substring -> 1 / unparsed 0
    "ovo/7": ("C", None),  # STU gt B, 2 options -> 0 / unparsed 0 (C is not an option)
    "ovo/8": (None, "CUDA out of memory"),  # FPD: failed -> 0 / 0 (error)
    "ovo/9": ("The answer is A", None),  # OJR gt A -> 1 / 1
    "ovo/10/0": ("1", None),  # REC count 1 -> 1 / 1
    "ovo/10/1": ("2 or 3", None),  # REC count 2: digits "23" -> 0 / first integer 2 -> 1
    "ovo/10/2": ("There are 3", None),  # REC count 3 -> 1 / 1
    "ovo/11/0": ("N", None),  # SSR type 0 -> 1 / 1
    "ovo/11/1": ("Y", None),  # SSR type 1 -> 1 / 1
    "ovo/11/2": ("yes", None),  # SSR type 1: "Yes" not in "yes" -> 0 / 1
    "ovo/12/0": ("No.", None),  # CRR type 0 -> 1 / 1
    "ovo/12/1": ("Not sure", None),  # CRR type 0: "No" in "Not sure" -> 1 / unparsed 0
    "ovo/12/2": ("Yes", None),  # CRR type 1 -> 1 / 1
    "ovo/12/3": (["Yes"], None),  # CRR type 1: list element -> 1 / 1
    "ovo/12/4": (None, None),  # CRR type 1: missing -> 0 / 0
}


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "ovo").mkdir()
    shutil.copy(FIXTURES / "ovo_bench_new.json", tmp_path / "ovo" / "ovo_bench_new.json")
    return tmp_path


def records_of(data_dir, responses=RESPONSES):
    return [
        {**q.to_record(), "response": responses[q.id][0], "error": responses[q.id][1]}
        for q in ovo.load_queries(data_dir)
    ]


def by_id(queries):
    return {q.id: q for q in queries}


def write_metadata(data_dir, items):
    (data_dir / "ovo" / "ovo_bench_new.json").write_text(json.dumps(items))


def test_ids_tasks_and_categories(data_dir):
    queries = ovo.load_queries(data_dir)
    assert [q.id for q in queries] == list(RESPONSES)
    tasks = ["EPM", "EPM", "ASI", "HLD", "OCR", "ACR", "ATR", "STU", "FPD", "OJR"]
    assert [q.task for q in queries] == tasks + ["REC"] * 3 + ["SSR"] * 3 + ["CRR"] * 5
    order = ["EPM", "ASI", "HLD", "OCR", "ACR", "ATR", "STU", "FPD", "OJR", "REC", "SSR", "CRR"]
    assert list(ovo.TASKS) == order
    assert {q.category for q in queries if q.task in ("REC", "SSR", "CRR")} == {"forward"}
    assert by_id(queries)["ovo/7"].category == "realtime"
    assert by_id(queries)["ovo/2"].category == "backward"


def test_windows_are_ceiled_realtimes(data_dir):
    queries = by_id(ovo.load_queries(data_dir))
    assert queries["ovo/0"].window == (0.0, 215.0)
    assert queries["ovo/1"].window == (0.0, 31.0)  # realtime 30.2 -> ceil 31
    assert queries["ovo/3"].window == (0.0, 13.0)  # 12.5 -> 13
    assert queries["ovo/10/1"].window == (0.0, 20.0)  # probe realtime 19.5 -> 20
    assert queries["ovo/11/2"].window == (0.0, 31.0)  # 30.4 -> 31
    assert queries["ovo/12/4"].window == (0.0, 338.0)


def test_video_clip_target_options_extra(data_dir):
    queries = by_id(ovo.load_queries(data_dir))
    mcq = queries["ovo/1"]
    assert mcq.video == "src_videos/Ego4D/clips/0a1b2c3d.mp4"
    assert (mcq.options, mcq.target) == (("Yes", "No"), "A")
    assert mcq.extra == {"gt": 0, "realtime": 30.2, "clip": "chunked_videos/1.mp4"}
    assert queries["ovo/3"].target == "E"
    rec = queries["ovo/10/1"]
    assert (rec.options, rec.target, rec.video) == ((), "2", "src_videos/perception_test/video_4017.mp4")
    assert rec.extra == {
        "probe": 1, "realtime": 19.5, "count": 2, "activity": "breaking something",
        "clip": "chunked_videos/10_1.mp4",
    }  # fmt: skip
    assert rec.question == "How many times did they breaking something?"
    ssr = queries["ovo/11/0"]
    assert (ssr.target, ssr.question, ssr.extra) == (
        "No",
        "crack the eggs",
        {"probe": 0, "realtime": 10, "type": 0, "clip": "chunked_videos/11_0.mp4"},
    )
    crr = queries["ovo/12/4"]
    assert (crr.target, crr.extra["clip"], crr.extra["ask_time"]) == ("Yes", "chunked_videos/12_4.mp4", 297)
    assert crr.question.startswith("The woman in a black coat is approaching a car")
    assert mcq.question == "Did I close the fridge?"


def test_prompts_byte_for_byte(data_dir):
    queries = by_id(ovo.load_queries(data_dir))
    assert queries["ovo/0"].prompt == (
        "\nQuestion: Who did I communicate to  when chopping egg plants?\nOptions:\n"
        "A. a person with brown shirt; B. a person with green shirt; C. a person with blue shirt; "
        "D. a person with white shirt;\n\n"
        "Respond only with the letter corresponding to your chosen option (e.g., A, B, C). \n"
        "Do not include any additional text or explanation in your response.\n"
    )
    assert queries["ovo/10/0"].prompt == (
        "\nYou're watching a video in which people may perform a certain type of action repetively. \n"
        "The person performing this kind of action are referred to as 'they' in the following statement.\n"
        "You're task is to count how many times have different people in the video perform this kind of "
        "action in total.\nOne complete motion counts as one. \n"
        "Now, answer the following question: How many times did they breaking something?\n"
        "Provide your answer as a single number (e.g., 0, 1, 2, 3…) indicating the total count.\n"
        "Do not include any additional text or explanation in your response.\n"
    )
    assert queries["ovo/11/2"].prompt == (
        "\nYou're watching a tutorial video which contain a sequential of steps. \n"
        "The following is one step from the whole procedures: \nwhisk\n"
        "Your task is to determine if the man or woman in the video is currently performing this step.\n"
        "Answer only with “Yes” or “No”.\n"
        "Do not include any additional text or explanation in your response.\n"
    )
    assert queries["ovo/12/0"].prompt == (
        "\nYou're responsible of answering questions based on the video content. \n"
        "The following question are relevant to the latest frames, i.e. the end of the video.\n"
        "The woman in a black coat is approaching a car, what action does she take to the car?\n"
        "Decide whether existing visual content, especially latest frames, i.e. frames that near the end of "
        "the video, provide enough information for answering the question.\n"
        "Answer only with “Yes” or “No”.\n"
        "Do not include any additional text or explanation in your response.\n"
    )
    # Five options, on one line, each followed by ";".
    assert "A. black; B. white; C. brown; D. grey; E. Unable to answer;\n" in queries["ovo/3"].prompt


def test_task_filter(data_dir):
    assert [q.id for q in ovo.load_queries(data_dir, tasks=["STU", "SSR"])] == [
        "ovo/7",
        "ovo/11/0",
        "ovo/11/1",
        "ovo/11/2",
    ]
    with pytest.raises(ValueError, match="EPM"):
        ovo.load_queries(data_dir, tasks=["XYZ"])


def test_official_score(data_dir):
    report = ovo.score(records_of(data_dir), "official")
    # EPM 2/2 = 100, ASI 0/1, HLD 1/1 -> backward = (100 + 0 + 100) / 3 = 200/3
    # OCR 1, ACR 0, ATR 1, STU 0, FPD 0, OJR 1 -> realtime = 300 / 6 = 50
    # REC 2/3, SSR 2/3, CRR 4/5 -> forward = (200/3 + 200/3 + 80) / 3 = 640/9
    # overall = (200/3 + 50 + 640/9) / 3 = (600 + 450 + 640) / 27 = 1690/27
    assert report.tasks == pytest.approx(
        {"EPM": 100.0, "ASI": 0.0, "HLD": 100.0, "OCR": 100.0, "ACR": 0.0, "ATR": 100.0, "STU": 0.0}
        | {"FPD": 0.0, "OJR": 100.0, "REC": 200 / 3, "SSR": 200 / 3, "CRR": 80.0}
    )
    assert report.categories == pytest.approx({"backward": 200 / 3, "realtime": 50.0, "forward": 640 / 9})
    assert report.overall == pytest.approx(1690 / 27)
    assert (
        report.task_counts["EPM"] == 2 and report.task_counts["CRR"] == 5 and report.task_counts["REC"] == 3
    )
    # Missing (ovo/5, ovo/12/4) and failed (ovo/8) responses score 0 but stay in the denominator.
    assert (report.n_total, report.n_scored, report.n_missing, report.n_errors, report.n_unparsed) == (
        21,
        21,
        2,
        1,
        0,
    )
    assert any("denominator" in note for note in report.notes)


def test_robust_score(data_dir):
    report = ovo.score(records_of(data_dir), "robust")
    # EPM 1/2 = 50, ASI 100, HLD 100 -> backward = 250/3
    # OCR 1, ACR 0, ATR 0, STU 0, FPD 0, OJR 1 -> realtime = 200 / 6 = 100/3
    # REC 3/3, SSR 3/3, CRR 3/5 -> forward = (100 + 100 + 60) / 3 = 260/3
    # overall = (250 + 100 + 260) / 9 = 610/9
    assert report.tasks["EPM"] == 50.0 and report.tasks["ASI"] == 100.0 and report.tasks["ATR"] == 0.0
    assert report.tasks["REC"] == 100.0 and report.tasks["SSR"] == 100.0 and report.tasks["CRR"] == 60.0
    assert report.categories == pytest.approx({"backward": 250 / 3, "realtime": 100 / 3, "forward": 260 / 3})
    assert report.overall == pytest.approx(610 / 9)
    # Unparsed: "ABCD", "C" (2 options), "Not sure".
    assert (report.n_scored, report.n_missing, report.n_errors, report.n_unparsed) == (21, 2, 1, 3)


def test_missing_category_does_not_crash(data_dir):
    records = [r for r in records_of(data_dir) if r["category"] != "forward"]
    report = ovo.score(records, "official")
    # overall = (200/3 + 50) / 2 = 175/3
    assert set(report.categories) == {"backward", "realtime"}
    assert report.overall == pytest.approx(175 / 3)
    assert any("forward" in note and "Total" in note for note in report.notes)
    assert ovo.score([], "robust").overall == 0.0


def test_duplicate_ids_are_counted_twice(data_dir):
    records = records_of(data_dir)
    stu = next(r for r in records if r["id"] == "ovo/7")
    report = ovo.score([*records, {**stu, "response": "B"}], "official")
    # STU: "C" -> 0 and "B" -> 1: 1/2 = 50; realtime = (100 + 0 + 100 + 50 + 0 + 100) / 6 = 175/3
    assert report.tasks["STU"] == 50.0 and report.task_counts["STU"] == 2
    assert report.categories["realtime"] == pytest.approx(175 / 3)
    assert any(note.startswith("1 records repeat") for note in report.notes)


def test_official_list_rec_and_non_text_responses(data_dir):
    records = records_of(data_dir, RESPONSES | {"ovo/10/1": (["2"], None), "ovo/4": (2, None)})
    report = ovo.score(records, "official")
    # REC ["2"] is read via "2" -> 1: REC 3/3. OCR's response 2 (an int) is left out: OCR has no record.
    assert report.tasks["REC"] == 100.0 and "OCR" not in report.tasks
    assert (report.n_scored, report.n_unparsed) == (20, 1)
    assert any("issue #12" in note for note in report.notes)
    assert any("left out of the denominator" in note for note in report.notes)


def test_unknown_mode(data_dir):
    with pytest.raises(ValueError, match="robust"):
        ovo.score(records_of(data_dir), "strict")


def test_upstream_result_file(data_dir):
    upstream = json.loads((FIXTURES / "upstream_result.json").read_text())
    assert ovo.looks_like(upstream) and ovo.looks_like({"forward": []})
    assert not ovo.looks_like({}) and not ovo.looks_like({"backward": {}}) and not ovo.looks_like([])
    assert not ovo.looks_like({"backward": [], "questions": []})
    records = ovo.records_from_upstream(upstream)
    ours = by_id(ovo.load_queries(data_dir))
    assert [r["id"] for r in records] == list(RESPONSES)
    for record in records:
        query = ours[record["id"]]
        assert (record["task"], record["category"], record["target"]) == (
            query.task,
            query.category,
            query.target,
        )
        if record["category"] == "forward":
            assert record["extra"] == query.extra and record["prompt"] == query.prompt
        else:  # the official row has no options and no realtime
            assert record["options"] == [] and record["extra"] == {**query.extra, "realtime": None}
    assert by_id_record(records, "ovo/8")["error"] == "CUDA out of memory"
    assert by_id_record(records, "ovo/12/3")["response"] == ["Yes"]
    report = ovo.score(records, "official")
    assert report.overall == pytest.approx(1690 / 27)  # as in test_official_score
    # Robust without options: "C" is a valid letter among A-E, so it is read (wrong), not unparsed.
    assert ovo.score(records, "robust").n_unparsed == 2


def by_id_record(records, rid):
    return next(r for r in records if r["id"] == rid)


def test_missing_or_invalid_metadata_file(tmp_path, data_dir):
    with pytest.raises(MetadataError, match="ovo_bench_new.json"):
        ovo.load_queries(tmp_path / "nowhere")
    (data_dir / "ovo" / "ovo_bench_new.json").write_text("[{")
    with pytest.raises(MetadataError, match="ovo_bench_new.json.*not valid JSON"):
        ovo.load_queries(data_dir)
    write_metadata(data_dir, {"id": 0})
    with pytest.raises(MetadataError, match="JSON list"):
        ovo.load_queries(data_dir)


@pytest.mark.parametrize(
    ("index", "change", "match"),
    [
        (4, {"question": None}, "record 4: field 'question' has the wrong type"),
        (1, {"gt": 2}, "record 1: gt 2 is not an index"),
        (0, {"options": "A. x; B. y"}, "record 0: field 'options'"),
        (3, {"options": ["only one"], "gt": 0}, "record 3: gt 0 is not an index into the 1 options"),
        (2, {"task": "XYZ"}, "record 2: unknown task 'XYZ'"),
        (10, {"test_info": []}, "record 10: test_info"),
        (11, {"test_info": [{"realtime": 3, "step": "whisk", "type": 2}]}, "record 11: probe type 2"),
        (12, {"test_info": [{"type": 1}]}, "record 12: test_info probe missing field 'realtime'"),
    ],
)
def test_malformed_records(data_dir, index, change, match):
    items = json.loads((FIXTURES / "ovo_bench_new.json").read_text())
    items[index] = {**items[index], **change}
    write_metadata(data_dir, items)
    with pytest.raises(MetadataError, match=match) as caught:
        ovo.load_queries(data_dir)
    assert "ovo_bench_new.json" in str(caught.value)


def test_missing_key_names_the_record(data_dir):
    items = json.loads((FIXTURES / "ovo_bench_new.json").read_text())
    del items[5]["gt"]
    write_metadata(data_dir, items)
    with pytest.raises(MetadataError, match="record 5: missing field 'gt'"):
        ovo.load_queries(data_dir)
