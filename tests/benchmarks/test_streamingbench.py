import csv
import json
import warnings

import pytest

from stc_cli.benchmarks import streamingbench as sb
from stc_cli.benchmarks.base import MetadataError

MODEL = "MyModel"
COLOURS = ["A. Red.", "B. Blue.", "C. Green.", "D. Black."]
MISSING = object()  # no answer key at all in the annotated JSON


def _q(task, question, time_stamp, answer, response, options=COLOURS):
    q = {"task_type": task, "question": question, "time_stamp": time_stamp, "answer": answer}
    q.update(options=list(options), required_ability="working memory")
    if response is not MISSING:
        q[MODEL] = response
    return q


# The section 2.6 fixture: sample_99 has 6 questions over two segments (not sorted by time), sample_132
# has the "00:12450" time stamp. Task names are the JSON's ("... Recognition").
SEGMENTS = [
    {
        "time": "[0:00:00 - 0:01:00]",
        "video_categories": "kitchen",
        "video_path": "./videos/sample_99_real.mp4",
        "questions": [
            _q(
                "Object Recognition",
                "What is on the table right now?",
                "00:00:31",
                "A",
                "A",
                options=["A. A cup.", "B. A plate.", "C. A fork.", "D. A knife."],
            ),
            _q("Object Recognition", "What is in the hand right now?", "00:01:10", "A", " A"),
            _q("Attribute Recognition", "What colour is the car right now?", "0:02:05", "A", "A."),
            _q("Counting", "How many cups are there?", "00:03:00", "B", ["B"]),
        ],
    },
    {
        "time": "[0:02:00 - 0:05:00]",
        "video_categories": "kitchen",
        "video_path": "./videos/sample_99_real.mp4",
        "questions": [
            _q("Counting", "How many plates are there?", "00:02:55", "A", ""),
            _q("Causal Reasoning", "Why did he stop?", "00:04:00", "B", MISSING),
        ],
    },
    {
        "time": "[0:12:00 - 0:13:00]",
        "video_categories": "street",
        "video_path": "./videos/sample_132_real.mp4",
        "questions": [
            _q("Text-Rich Understanding", "What does the sign say?", "00:12450", "C", None),
            _q("Clips Summarize", "What happened just now?", "00:24", "C", "The best option is C"),
        ],
    },
]
CSV_TASKS = {"Object Recognition": "Object Perception", "Attribute Recognition": "Attribute Perception"}
IDS = [f"streamingbench/sample_99/{k}" for k in range(1, 7)] + [
    "streamingbench/sample_132/1",
    "streamingbench/sample_132/2",
]
TASKS = ["Object Perception"] * 2 + ["Attribute Perception", "Counting", "Counting", "Causal Reasoning"]
TASKS += ["Text-Rich Understanding", "Clips Summarize"]
ODD_TIMES = "ignore:.*as upstream does"


def _clean_segments():
    return [
        {**seg, "questions": [{k: v for k, v in q.items() if k != MODEL} for q in seg["questions"]]}
        for seg in SEGMENTS
    ]


def _write_json(data_dir, segments):
    folder = data_dir / "streamingbench"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "questions_real.json").write_text(json.dumps(segments))
    return data_dir


def _write_csv(data_dir, segments):
    folder = data_dir / "streamingbench"
    folder.mkdir(parents=True, exist_ok=True)
    fields = ["question", "time_stamp", "answer"]
    header = ["question_id", "task_type", *fields, "options", "frames_required", "temporal_clue_type"]
    seen = {}
    with (folder / "Real_Time_Visual_Understanding.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, header)
        writer.writeheader()
        for seg in segments:
            sample = seg["video_path"].removeprefix("./videos/sample_").removesuffix("_real.mp4")
            for q in seg["questions"]:
                seen[sample] = seen.get(sample, 0) + 1
                row = {name: q[name] for name in fields}
                row["question_id"] = f"Real-Time Visual Understanding_sample_{sample}_{seen[sample]}"
                row["task_type"] = CSV_TASKS.get(q["task_type"], q["task_type"])
                row["options"] = repr(q["options"])  # a Python list literal, as in the HF file
                writer.writerow({**row, "frames_required": "single", "temporal_clue_type": "Prior"})
    return data_dir


@pytest.fixture
def json_dir(tmp_path):
    return _write_json(tmp_path / "json", _clean_segments())


@pytest.fixture
def csv_dir(tmp_path):
    return _write_csv(tmp_path / "csv", _clean_segments())


@pytest.mark.filterwarnings(ODD_TIMES)
def test_csv_and_json_give_the_same_queries(json_dir, csv_dir):
    from_json = sb.load_queries(json_dir)
    from_csv = sb.load_queries(csv_dir)
    assert [q.id for q in from_json] == IDS
    assert [q.task for q in from_json] == TASKS  # "Object Recognition" -> "Object Perception"
    assert [q.to_record() for q in from_csv] == [q.to_record() for q in from_json]
    first = from_json[0]
    assert first.video == "videos/sample_99/video.mp4"
    assert first.category == "Real-Time Visual Understanding"
    assert first.options == ("A. A cup.", "B. A plate.", "C. A fork.", "D. A knife.")
    assert first.target == "A"
    assert first.extra == {"time_stamp": "00:00:31", "context_seconds": None}


@pytest.mark.filterwarnings(ODD_TIMES)
def test_csv_is_preferred_when_both_exist(csv_dir):
    (csv_dir / "streamingbench" / "questions_real.json").write_text("not json")
    assert [q.id for q in sb.load_queries(csv_dir)] == IDS


@pytest.mark.filterwarnings(ODD_TIMES)
@pytest.mark.parametrize(
    ("context", "starts"),
    [
        (None, [0] * 8),
        (-1, [0] * 8),  # upstream CONTEXT_TIME=-1: all context
        # max(0, t - 60) for t = 31, 70, 125, 180, 175, 240, 12450, 24
        (60, [0, 10, 65, 120, 115, 180, 12390, 0]),
    ],
)
def test_windows(json_dir, context, starts):
    queries = sb.load_queries(json_dir, context_seconds=context)
    ends = [31, 70, 125, 180, 175, 240, 12450, 24]  # 0:02:05 -> 125; "00:24" -> 24
    assert [q.window for q in queries] == [(float(s), float(e)) for s, e in zip(starts, ends, strict=True)]
    assert {q.extra["context_seconds"] for q in queries} == {context}


@pytest.mark.parametrize(
    ("raw", "seconds", "warns"),
    [
        ("00:12450", 12450, True),  # 0*60 + 12450, as upstream reads it
        ("00:24", 24, True),
        ("00:00:8", 8, True),
        ("1:02:03", 3723, False),
        ("01:02:03", 3723, False),
    ],
)
def test_time_stamps(tmp_path, raw, seconds, warns):
    segments = _clean_segments()[2:]
    segments[0]["questions"][0]["time_stamp"] = raw
    segments[0]["questions"][1]["time_stamp"] = "00:00:24"
    _write_json(tmp_path, segments)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        query = sb.load_queries(tmp_path)[0]
    assert query.window == (0.0, float(seconds))
    assert query.extra["time_stamp"] == raw
    if warns:
        (warning,) = caught
        text = str(warning.message)
        assert "questions_real.json" in text and "streamingbench/sample_132/1" in text and repr(raw) in text
    else:
        assert caught == []


@pytest.mark.filterwarnings(ODD_TIMES)
def test_prompt_is_upstream_byte_for_byte(json_dir):
    assert sb.load_queries(json_dir)[0].prompt == (
        "You are an advanced video question-answering AI assistant. You have been provided with some "
        "frames from the video and a multiple-choice question related to the video. Your task is to "
        "carefully analyze the video and provide the best answer to question, choosing from the four "
        "options provided. Respond with only the letter (A, B, C, or D) of the correct option.\n\n"
        "Question: What is on the table right now?\n\n"
        "Options:\nA. A cup.\nB. A plate.\nC. A fork.\nD. A knife.\n\n"
        "The best option is:"
    )


def test_unlabelled_options_get_letters(tmp_path):
    segments = _clean_segments()[:1]
    segments[0]["questions"][0]["options"] = ["a cup", "a plate", "a fork", "a knife"]
    query = sb.load_queries(_write_json(tmp_path, segments))[0]
    assert query.options == ("A. a cup", "B. a plate", "C. a fork", "D. a knife")
    assert query.prompt.endswith(
        "Options:\nA. a cup\nB. a plate\nC. a fork\nD. a knife\n\nThe best option is:"
    )


@pytest.mark.filterwarnings(ODD_TIMES)
def test_task_filter(json_dir):
    queries = sb.load_queries(json_dir, tasks=["Counting", "Object Perception"])
    assert [q.id for q in queries] == IDS[:2] + IDS[3:5]
    with pytest.raises(ValueError, match="Object Recognition"):
        sb.load_queries(json_dir, tasks=["Object Recognition"])


def test_no_metadata_names_both_paths(tmp_path):
    with pytest.raises(MetadataError) as error:
        sb.load_queries(tmp_path)
    text = str(error.value)
    assert str(tmp_path / "streamingbench" / "Real_Time_Visual_Understanding.csv") in text
    assert str(tmp_path / "streamingbench" / "questions_real.json") in text


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("time_stamp", "00:ab:12", "not a time"),
        ("time_stamp", "", "not a time"),
        ("task_type", "Emotion Recognition", "unknown task_type"),
        ("answer", "E", "not a letter"),
        ("options", ["A. x", "B. y"], "four strings"),
    ],
)
def test_bad_question_fields(tmp_path, field, value, message):
    segments = _clean_segments()[:1]
    segments[0]["questions"][1][field] = value
    with pytest.raises(MetadataError, match=f"record streamingbench/sample_99/2: .*{message}"):
        sb.load_queries(_write_json(tmp_path, segments))


def test_bad_files(tmp_path):
    segments = _clean_segments()[:1]
    segments[0]["video_path"] = "./videos/clip.mp4"
    with pytest.raises(MetadataError, match="segment 0: video_path"):
        sb.load_queries(_write_json(tmp_path / "a", segments))
    (_write_json(tmp_path / "b", []) / "streamingbench" / "questions_real.json").write_text("{")
    with pytest.raises(MetadataError, match="not valid JSON"):
        sb.load_queries(tmp_path / "b")
    csv_path = _write_csv(tmp_path / "c", _clean_segments()[:1]) / "streamingbench" / sb.CSV_FILE
    csv_path.write_text(csv_path.read_text().replace("['A. Red.'", "[A. Red.'"))
    with pytest.raises(MetadataError, match="sample_99_2: options is not a Python list"):
        sb.load_queries(tmp_path / "c")
    csv_path.write_text("question_id,question\nx,y\n")
    with pytest.raises(MetadataError, match="missing columns"):
        sb.load_queries(tmp_path / "c")


@pytest.mark.filterwarnings(ODD_TIMES)
def test_records_from_upstream():
    assert sb.looks_like(SEGMENTS)
    assert (
        not sb.looks_like({"questions": []}) and not sb.looks_like([{"video": "x"}]) and not sb.looks_like([])
    )
    records = sb.records_from_upstream(SEGMENTS)  # the one extra key, MyModel, is found
    assert [r["id"] for r in records] == IDS
    assert [r["response"] for r in records] == [
        "A",
        " A",
        "A.",
        ["B"],
        "",
        None,
        None,
        "The best option is C",
    ]
    assert {r["error"] for r in records} == {None}
    assert records[0]["options"] == ["A. A cup.", "B. A plate.", "C. A fork.", "D. A knife."]
    assert records[0]["target"] == "A" and records[0]["task"] == "Object Perception"


@pytest.mark.filterwarnings(ODD_TIMES)
def test_response_key_detection():
    two = json.loads(json.dumps(SEGMENTS))
    two[2]["questions"][0]["Other"] = "B"
    with pytest.raises(ValueError, match=r"\['MyModel', 'Other'\].*pass response_key"):
        sb.records_from_upstream(two)
    records = sb.records_from_upstream(two, response_key="Other")
    assert [r["response"] for r in records] == [None] * 6 + ["B", None]
    with pytest.raises(ValueError, match="candidates: none"):
        sb.records_from_upstream(_clean_segments())


@pytest.mark.filterwarnings(ODD_TIMES)
def test_official_score():
    report = sb.score(sb.records_from_upstream(SEGMENTS), "official")
    # First character vs the answer; "", missing key and None leave the denominator.
    # OP: "A" right, " A" -> " " wrong -> 1/2 = 50.0; ATP: "A." -> "A" right -> 100.0;
    # CT: ["B"] -> "B" right ("" excluded) -> 100.0; CS: "The best..." -> "T" wrong -> 0.0;
    # CR (missing key) and TR (None) have no scored question. All = 3 right of 5 answered = 60.0.
    assert report.tasks == {
        "Object Perception": 50.0,
        "Attribute Perception": 100.0,
        "Clips Summarize": 0.0,
        "Counting": 100.0,
    }
    assert report.task_counts == {
        "Object Perception": 2,
        "Attribute Perception": 1,
        "Clips Summarize": 1,
        "Counting": 1,
    }
    assert report.overall == 60.0
    assert report.categories == {"Real-Time Visual Understanding": 60.0}
    assert (report.n_total, report.n_scored, report.n_missing, report.n_unparsed) == (8, 5, 3, 0)
    assert len(report.notes) == 1 and "3 records without an answer" in report.notes[0]


@pytest.mark.filterwarnings(ODD_TIMES)
def test_stc_score_is_the_stc_authors_count_py():
    report = sb.score(sb.records_from_upstream(SEGMENTS), "stc")
    # Stripped answer == letter, over answered questions: "A" and " A" right (OP 2/2), "A." wrong (ATP 0/1),
    # ["B"] -> "B" right ("" left out, CT 1/1), "The best option is C" wrong (CS 0/1); the missing key
    # and None (on which count.py would crash) leave the denominator too. All = 3 of 5 = 60.0.
    assert report.tasks == {
        "Object Perception": 100.0,
        "Attribute Perception": 0.0,
        "Clips Summarize": 0.0,
        "Counting": 100.0,
    }
    assert (report.overall, report.n_scored, report.n_missing) == (60.0, 5, 3)
    assert report.notes == ["3 records without an answer (count.py skips a missing key and would crash on an "
                            "empty or null one) are left out of the denominator"]  # fmt: skip


@pytest.mark.filterwarnings(ODD_TIMES)
def test_robust_score():
    report = sb.score(sb.records_from_upstream(SEGMENTS), "robust")
    # All 8 count. OP: "A", " A" -> 2/2 = 100.0; ATP: "A." -> 100.0; CT: ["B"] right, "" wrong -> 50.0;
    # CR: missing -> 0.0; TR: None -> 0.0; CS: "The best option is C" -> C right -> 100.0.
    # Overall = 5 / 8 = 62.5.
    assert report.tasks == {
        "Object Perception": 100.0,
        "Attribute Perception": 100.0,
        "Text-Rich Understanding": 0.0,
        "Clips Summarize": 100.0,
        "Causal Reasoning": 0.0,
        "Counting": 50.0,
    }
    assert report.overall == 62.5
    assert report.categories == {"Real-Time Visual Understanding": 62.5}
    assert (report.n_total, report.n_scored, report.n_missing, report.n_unparsed) == (8, 8, 3, 0)


def _record(response, error=None, target="B"):
    return {"task": "Counting", "target": target, "options": COLOURS, "response": response, "error": error}


def test_errors_and_odd_responses():
    records = [
        _record("B"),
        _record("I do not know"),  # official: "I" != "B", wrong; robust: unparsed
        _record("B", error="CUDA out of memory"),
        _record([""]),  # official: first element "" is skipped by `if model_answer`
        _record(7),  # official: count.py would crash on 7[0]
    ]
    official = sb.score(records, "official")
    # 1 right of the 2 scored ("B", "I do not know") -> 50.0
    assert (official.overall, official.n_scored, official.n_errors) == (50.0, 2, 1)
    assert (official.n_missing, official.n_unparsed) == (1, 1)
    assert len(official.notes) == 3
    robust = sb.score(records, "robust")
    # 1 right of 5; the failed one counts as wrong though its text is right -> 20.0
    assert (robust.overall, robust.n_scored, robust.n_errors) == (20.0, 5, 1)
    # base.response_status calls [""] answered; no letter in it, "I do not know" or 7 -> 3 unparsed
    assert (robust.n_missing, robust.n_unparsed) == (0, 3)


def test_unknown_mode():
    with pytest.raises(
        ValueError, match="--mode exact is not defined for streamingbench; use one of official"
    ):
        sb.score([], "exact")
