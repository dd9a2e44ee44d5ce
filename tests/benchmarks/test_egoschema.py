import json
import math

import pandas as pd
import pytest

from stc_cli.benchmarks import egoschema
from stc_cli.benchmarks.base import MetadataError

OPTIONS = [
    "A. C dips the paintbrush in paint.",
    "B. C wipes the paintbrush on a cloth.",
    "C. C dips the paintbrush in water.",
    "D. C shakes the paintbrush.",
    "E. C blows on the paintbrush.",
]
TEXTS = [option[3:] for option in OPTIONS]
QUESTION = "How does c ensure that their paintbrush is clean?"

# Subset fixture (section 4.5): answers as the HF file gives them, responses per q_uid.
ANSWERS = {"v0": 2, "v1": 2, "v2": 2, "v3": 3, "v4": 4}
RESPONSES = {
    "v0": "C",  # C: official right, robust right
    "v1": "(C) C dips the paintbrush in water.",  # C: official right (char before ")"), robust right
    "v2": "c",  # C: official wrong (case), robust right
    "v3": "",  # D: official reads "A" (upstream quirk) -> wrong, robust missing
    "v4": "F",  # E: official wrong, robust unparsed
}


def _write(tmp_path, split="Subset", answers=ANSWERS, **columns):
    frame = pd.DataFrame(
        {
            "video_idx": list(answers),
            "question": [QUESTION] * len(answers),
            "option": [OPTIONS] * len(answers),
            "answer": list(answers.values()),
            "question_idx": [str(i) for i in range(len(answers))],
        }
        | columns
    )
    folder = tmp_path / "egoschema" / split
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "test-00000-of-00001.parquet")
    return tmp_path


def _records(queries, responses=RESPONSES):
    return [q.to_record() | {"response": responses[q.extra["q_uid"]], "error": None} for q in queries]


def test_queries(tmp_path):
    queries = egoschema.load_queries(_write(tmp_path))
    assert [q.id for q in queries] == [
        "egoschema/v0",
        "egoschema/v1",
        "egoschema/v2",
        "egoschema/v3",
        "egoschema/v4",
    ]
    assert [q.target for q in queries] == list("CCCDE")
    first = queries[0]
    assert first.video == "videos/v0.mp4"
    assert first.window == (0.0, math.inf)
    assert first.options == tuple(TEXTS)
    assert first.extra == {"q_uid": "v0", "question_idx": "0", "split": "subset"}
    assert (first.task, first.category) == ("egoschema", "EgoSchema")


def test_prompt(tmp_path):
    assert egoschema.load_queries(_write(tmp_path))[0].prompt == (
        "Question: How does c ensure that their paintbrush is clean?\n"
        "Options:\n"
        "(A) C dips the paintbrush in paint.\n"
        "(B) C wipes the paintbrush on a cloth.\n"
        "(C) C dips the paintbrush in water.\n"
        "(D) C shakes the paintbrush.\n"
        "(E) C blows on the paintbrush.\n"
        "Only give the best option."
    )


def test_answer_as_digit_string(tmp_path):
    answers = {"v0": "0", "v1": "4"}
    queries = egoschema.load_queries(_write(tmp_path, answers=answers))
    assert [q.target for q in queries] == ["A", "E"]


def test_official_score(tmp_path):
    report = egoschema.score(_records(egoschema.load_queries(_write(tmp_path))), "official")
    # v0 and v1 right of 5 -> 40.0
    assert report.overall == pytest.approx(40.0)
    assert report.categories == {"EgoSchema": pytest.approx(40.0)}
    assert report.tasks == {"egoschema": pytest.approx(40.0)}
    assert (report.n_total, report.n_scored, report.n_missing, report.n_unparsed) == (5, 5, 0, 0)


def test_robust_score(tmp_path):
    report = egoschema.score(_records(egoschema.load_queries(_write(tmp_path))), "robust")
    # v0, v1, v2 right of 5 -> 60.0; "" missing, "F" unparsed
    assert report.overall == pytest.approx(60.0)
    assert (report.n_total, report.n_scored, report.n_missing, report.n_unparsed) == (5, 5, 1, 1)


def test_official_empty_response_reads_as_a(tmp_path):
    queries = egoschema.load_queries(_write(tmp_path, answers={"v0": 0}))
    records = _records(queries, {"v0": ""})
    # STC turns "" into "A": right against answer 0 -> 100.0; robust: missing -> 0.0
    assert egoschema.score(records, "official").overall == pytest.approx(100.0)
    assert egoschema.score(records, "robust").overall == pytest.approx(0.0)


def test_official_leaves_out_no_response_and_errors(tmp_path):
    queries = egoschema.load_queries(_write(tmp_path))
    records = _records(queries)
    records[2] |= {"response": None}
    records[4] |= {"response": None, "error": "decode failed"}
    report = egoschema.score(records, "official")
    # scored v0 (right), v1 (right), v3 (wrong) -> 2 of 3 = 66.67
    assert report.overall == pytest.approx(200 / 3)
    assert (report.n_scored, report.n_missing, report.n_errors) == (3, 1, 1)
    assert any("left out" in note for note in report.notes)
    robust = egoschema.score(records, "robust")
    # v0, v1 right of 5 -> 40.0
    assert robust.overall == pytest.approx(40.0)
    assert (robust.n_scored, robust.n_missing, robust.n_errors) == (5, 2, 1)


def test_full_set_has_no_targets_and_cannot_be_scored(tmp_path):
    data_dir = _write(tmp_path, split="MC", answers={"v0": "", "v1": ""})
    queries = egoschema.load_queries(data_dir, split="full")
    assert [q.target for q in queries] == ["", ""]
    with pytest.raises(ValueError, match="answers are hidden.*write_submission"):
        egoschema.score(_records(queries, {"v0": "A", "v1": "B"}), "official")


def test_write_submission(tmp_path):
    queries = egoschema.load_queries(_write(tmp_path))
    records = _records(queries)
    records.append(records[0] | {"extra": {"q_uid": "v5"}, "response": None, "error": "timeout"})
    path = tmp_path / "submission.json"
    counts = egoschema.write_submission(records, path)
    # "C", "(C) ...", "c" -> index 2; "" and the failed record missing; "F" unparsed and left out
    assert json.loads(path.read_text()) == {"v0": 2, "v1": 2, "v2": 2}
    assert counts == {"written": 3, "unparsed": 1, "missing": 2}


def test_submit_help_says_how():
    assert "validation-server.onrender.com/api/upload/" in egoschema.SUBMIT_HELP
    assert "never reports a full-set score" in egoschema.SUBMIT_HELP


def test_missing_file(tmp_path):
    with pytest.raises(MetadataError, match=r"Subset/test-00000-of-00001\.parquet: not found"):
        egoschema.load_queries(tmp_path)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="unknown EgoSchema split"):
        egoschema.load_queries(tmp_path, split="val")


def test_bad_answer(tmp_path):
    with pytest.raises(MetadataError, match=r"record 1: answer 7 is not an option index"):
        egoschema.load_queries(_write(tmp_path, answers={"v0": 1, "v1": 7}))


def test_missing_column(tmp_path):
    data_dir = _write(tmp_path)
    path = data_dir / "egoschema" / "Subset" / "test-00000-of-00001.parquet"
    pd.read_parquet(path).drop(columns=["answer"]).to_parquet(path)
    with pytest.raises(MetadataError, match="missing column\\(s\\) answer"):
        egoschema.load_queries(data_dir)


def test_wrong_number_of_options(tmp_path):
    data_dir = _write(tmp_path, answers={"v0": 1}, option=[OPTIONS[:4]])
    with pytest.raises(MetadataError, match="record 0: option must hold 5 strings"):
        egoschema.load_queries(data_dir)


def test_duplicate_video(tmp_path):
    data_dir = _write(tmp_path, answers={"v0": 1})
    path = data_dir / "egoschema" / "Subset" / "test-00000-of-00001.parquet"
    pd.concat([pd.read_parquet(path)] * 2).to_parquet(path)
    with pytest.raises(MetadataError, match="record 1: video_idx v0 appears twice"):
        egoschema.load_queries(data_dir)
