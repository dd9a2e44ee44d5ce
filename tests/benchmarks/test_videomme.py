import math

import pandas as pd
import pytest

from stc_cli.benchmarks import videomme
from stc_cli.benchmarks.base import MetadataError

OPTIONS = ["A. Apples.", "B. Bread.", "C. Berries.", "D. Cheese."]
INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)

# Section 5.5 of the notes: one video per duration, three questions each, one task type per position.
# (video_id, videoID, duration, [(task_type, answer, response, error), ...])
FIXTURE = [
    (
        "001",
        "shortVid001",
        "short",
        [
            ("Counting Problem", "C", "C. Berries.", None),
            ("OCR Problems", "D", "D.", None),
            ("Temporal Reasoning", "C", "Best option: C", None),  # official "B": the prefix bug
        ],
    ),
    (
        "301",
        "mediumVid301",
        "medium",
        [
            ("Counting Problem", "B", "The answer is (B)", None),
            (
                "OCR Problems",
                "A",
                "I cannot tell from the video because it is too dark and blurry to see",
                None,
            ),
            ("Temporal Reasoning", "A", "Based on the video, A", None),  # official "B", from "Based"
        ],
    ),
    (
        "601",
        "longVid601",
        "long",
        [
            ("Counting Problem", "D", "", None),
            ("OCR Problems", "B", None, "CUDA out of memory"),
            ("Temporal Reasoning", "C", "A person is cooking.", None),  # both modes read "A"
        ],
    ),
]

SRT = (
    "1\n00:00:00,000 --> 00:00:02,500\n"
    '<font color="white" size=".72c">Hi guys, welcome back.</font>\n\n'
    "2\n00:00:02,500 --> 00:00:05,000\n"
    '<font color="white" size=".72c">Today we pick berries.</font>\n'
)


def write_fixture(root, drop_column=None, **overrides):
    rows = []
    for video_id, youtube_id, duration, questions in FIXTURE:
        for n, (task, answer, _, _) in enumerate(questions, start=1):
            rows.append(
                {
                    "video_id": video_id,
                    "duration": duration,
                    "domain": "Life Record",
                    "sub_category": "Food",
                    "url": f"https://www.youtube.com/watch?v={youtube_id}",
                    "videoID": youtube_id,
                    "question_id": f"{video_id}-{n}",
                    "task_type": task,
                    "question": f"What is on the table in scene {n}?",
                    "options": OPTIONS,
                    "answer": answer,
                }
            )
    frame = pd.DataFrame(rows)
    for column, value in overrides.items():
        frame.loc[0, column] = value
    if drop_column:
        frame = frame.drop(columns=[drop_column])
    path = root / "videomme" / "videomme" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    frame.to_parquet(path)
    return path


def records(tmp_path):
    write_fixture(tmp_path)
    queries = videomme.load_queries(tmp_path)
    answers = [(response, error) for *_, questions in FIXTURE for _, _, response, error in questions]
    return [{**q.to_record(), "response": r, "error": e} for q, (r, e) in zip(queries, answers, strict=True)]


def test_load_ids_windows_and_fields(tmp_path):
    write_fixture(tmp_path)
    queries = videomme.load_queries(tmp_path)
    assert [q.id for q in queries][:4] == [
        "videomme/001-1",
        "videomme/001-2",
        "videomme/001-3",
        "videomme/301-1",
    ]
    first = queries[0]
    assert (first.task, first.category, first.target) == ("Counting Problem", "short", "C")
    assert first.video == "data/shortVid001.mp4"
    assert first.window == (0.0, math.inf)
    assert first.options == tuple(OPTIONS)
    assert first.extra == {
        "duration": "short",
        "domain": "Life Record",
        "sub_category": "Food",
        "videoID": "shortVid001",
    }
    assert [q.category for q in queries] == ["short"] * 3 + ["medium"] * 3 + ["long"] * 3
    assert set(videomme.TASKS.values()) == {"all"} and len(videomme.TASKS) == 12


def test_prompt_without_subtitles(tmp_path):
    write_fixture(tmp_path)
    prompt = videomme.load_queries(tmp_path)[0].prompt
    assert prompt == (
        INSTRUCTION + "\nWhat is on the table in scene 1?\n"
        "A. Apples.\nB. Bread.\nC. Berries.\nD. Cheese.\nThe best answer is:"
    )


def test_prompt_with_subtitles_and_missing_srt(tmp_path):
    write_fixture(tmp_path)
    (tmp_path / "videomme" / "subtitle").mkdir()
    (tmp_path / "videomme" / "subtitle" / "shortVid001.srt").write_text(SRT)
    with pytest.warns(UserWarning) as caught:
        queries = videomme.load_queries(tmp_path, subtitles=True)
    # One warning per video without an .srt (medium and long), each naming the file.
    assert sorted(str(w.message).split(":")[0] for w in caught) == [
        str(tmp_path / "videomme" / "subtitle" / "longVid601.srt"),
        str(tmp_path / "videomme" / "subtitle" / "mediumVid301.srt"),
    ]
    assert queries[0].prompt == (
        "This video's subtitles are listed below:\nHi guys, welcome back.\nToday we pick berries.\n"
        + INSTRUCTION
        + "\nWhat is on the table in scene 1?\n"
        "A. Apples.\nB. Bread.\nC. Berries.\nD. Cheese.\nThe best answer is:"
    )
    assert queries[0].extra["subtitles"] is True
    assert queries[3].prompt.startswith(INSTRUCTION)
    assert queries[3].extra["subtitles"] is False


def test_task_filter(tmp_path):
    write_fixture(tmp_path)
    queries = videomme.load_queries(tmp_path, tasks=["OCR Problems"])
    assert [q.id for q in queries] == ["videomme/001-2", "videomme/301-2", "videomme/601-2"]
    with pytest.raises(ValueError, match="Counting Problems"):
        videomme.load_queries(tmp_path, tasks=["Counting Problems"])


def test_official_scores(tmp_path):
    report = videomme.score(records(tmp_path), "official")
    # short: C. Berries. right, D. right, "Best option: C" -> B wrong -> 2/3
    # medium: (B) right, the long sentence skipped, "Based on the video, A" -> B wrong -> 1/2
    # long: "" and the failed one skipped, "A person is cooking." -> A wrong -> 0/1
    assert report.categories == pytest.approx({"short": 200 / 3, "medium": 50.0, "long": 0.0})
    # overall (micro): (2 + 1 + 0) / (3 + 2 + 1) = 3/6
    assert report.overall == pytest.approx(50.0)
    # Counting: C right, (B) right, "" skipped -> 2/2; OCR: D. right, sentence and error skipped -> 1/1;
    # Temporal: B, B, A all wrong -> 0/3
    assert report.tasks == pytest.approx(
        {"OCR Problems": 100.0, "Counting Problem": 100.0, "Temporal Reasoning": 0.0}
    )
    assert list(report.tasks) == ["OCR Problems", "Counting Problem", "Temporal Reasoning"]  # TASKS order
    assert report.task_counts == {"OCR Problems": 1, "Counting Problem": 2, "Temporal Reasoning": 3}
    assert (report.n_total, report.n_scored) == (9, 6)
    assert (report.n_unparsed, report.n_missing, report.n_errors) == (1, 1, 1)
    notes = " ".join(report.notes)
    assert "3 record(s) left the denominator" in notes
    assert "1 answer(s) read differently because of the upstream missing-comma bug" in notes
    assert "these records hold 9" in notes


def test_robust_scores(tmp_path):
    report = videomme.score(records(tmp_path), "robust")
    # short: C, D, "Best option: C" -> C all right -> 3/3
    # medium: (B) right, sentence unparsed (wrong), "..., A" -> A right -> 2/3
    # long: "" missing, failed, "A person..." -> A wrong -> 0/3
    assert report.categories == pytest.approx({"short": 100.0, "medium": 200 / 3, "long": 0.0})
    assert report.overall == pytest.approx(500 / 9)  # (3 + 2 + 0) / 9
    # Counting: C, B right, "" wrong -> 2/3; OCR: D right, two wrong -> 1/3;
    # Temporal: C, A right, A wrong -> 2/3
    assert report.tasks == pytest.approx(
        {"OCR Problems": 100 / 3, "Counting Problem": 200 / 3, "Temporal Reasoning": 200 / 3}
    )
    assert report.task_counts == {"OCR Problems": 3, "Counting Problem": 3, "Temporal Reasoning": 3}
    assert (report.n_total, report.n_scored) == (9, 9)
    assert (report.n_unparsed, report.n_missing, report.n_errors) == (1, 1, 1)


@pytest.mark.parametrize(
    ("response", "want"),
    [
        ("C. Berries.", "C"),
        ("Best option: C", "B"),  # "Best answer:Best option:" is one prefix upstream
        ("Best answer: D", "B"),
        ("The best answer is D", "D"),
        ("The answer is (B)", "B"),
        ("The correct option is C", "C"),
        ("I cannot tell from the video because it is too dark and blurry to see", ""),
        ("no idea", ""),  # short and letterless: "" as well
        (["D"], "D"),
        (None, ""),
    ],
)
def test_official_choice(response, want):
    assert videomme.official_choice(response) == want


def test_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        videomme.score([], "lenient")


def test_missing_parquet(tmp_path):
    with pytest.raises(MetadataError, match="test-00000-of-00001.parquet"):
        videomme.load_queries(tmp_path)


def test_missing_column(tmp_path):
    path = write_fixture(tmp_path, drop_column="task_type")
    with pytest.raises(MetadataError, match=r"missing column\(s\) \['task_type'\]") as error:
        videomme.load_queries(tmp_path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"duration": "tiny"}, "duration 'tiny'"),
        ({"task_type": "Counting"}, "task_type 'Counting'"),
        ({"answer": "E"}, "answer 'E'"),
        ({"answer": ""}, "answer ''"),
        ({"answer": None}, r"answer (None|nan) is not a letter"),
        ({"question_id": "001-2"}, "duplicate question_id"),
    ],
)
def test_bad_rows(tmp_path, override, message):
    write_fixture(tmp_path, **override)
    with pytest.raises(MetadataError, match=message):
        videomme.load_queries(tmp_path)
