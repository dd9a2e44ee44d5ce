import json

import pytest
from typer.testing import CliRunner

from stc_cli import benchmarks
from stc_cli.cli import app
from tests.ovo_fixture import RECORDS, write_ovo

runner = CliRunner()
# ovo/0 (EPM, target B), ovo/1 (OCR, target A), ovo/2/0 and ovo/2/1 (REC, count 1).
RESPONSES = {"ovo/0": "B", "ovo/1": "Answer: B", "ovo/2/0": "1", "ovo/2/1": "2 or 3"}
# Robust: EPM 1/1, OCR 0/1 (B is not A), REC 1/2 ("2 or 3" says 2): categories 100, 0, 50 -> overall 50.
# Official: OCR scores, since the letter A occurs in "Answer"; REC joins digits, "23" != "1":
# categories 100, 100, 50 -> overall 250 / 3.
ROBUST = {"backward": 100.0, "realtime": 0.0, "forward": 50.0}
OFFICIAL = {"backward": 100.0, "realtime": 100.0, "forward": 50.0}


def score(*args):
    return runner.invoke(app, ["score", *args])


@pytest.fixture
def samples(tmp_path):
    queries = benchmarks.get("ovo").load_queries(write_ovo(tmp_path / "data").parent)
    run = tmp_path / "runs" / "rekv-ovo-stc"
    run.mkdir(parents=True)
    lines = [json.dumps({**q.to_record(), "response": RESPONSES[q.id], "error": None}) for q in queries]
    (run / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return run / "samples.jsonl"


def test_samples_are_scored_robust_by_default(samples):
    report = json.loads(score(str(samples), "--json").stdout)
    assert (report["bench"], report["mode"], report["n_total"], report["n_scored"]) == ("ovo", "robust", 4, 4)
    assert report["categories"] == ROBUST and report["overall"] == pytest.approx(50.0)
    assert report["tasks"] == {"EPM": 100.0, "OCR": 0.0, "REC": 50.0}


def test_run_folder_and_official_mode(samples):
    report = json.loads(score(str(samples.parent), "--mode", "official", "--json").stdout)
    assert report["categories"] == OFFICIAL and report["overall"] == pytest.approx(250 / 3)


def test_each_scoring_names_the_published_numbers_it_compares_with(samples):
    official = json.loads(score(str(samples), "--mode", "official", "--json").stdout)
    assert official["notes"][0].startswith("official scoring: OVO-Bench's score.py: comparable with the ")
    assert "the STC README's OVO-Bench rows" in official["notes"][0]
    robust = json.loads(score(str(samples), "--json").stdout)
    assert robust["notes"][0].startswith("robust scoring: one answer extractor for every benchmark")
    assert "not with published numbers" in robust["notes"][0]


def test_official_scores_a_simplestream_ovo_run_with_ovo_benchs_score_py(samples):
    """SimpleStream's README scores its OVO-Bench runs with OVO-Bench's score.py: run.json naming the
    protocol changes nothing there (its StreamingBench runs get its own reading: see
    tests/benchmarks/test_simplestream_scoring.py)."""
    plain = json.loads(score(str(samples), "--mode", "official", "--json").stdout)
    (samples.parent / "run.json").write_text(json.dumps({"settings": {"protocol": {"name": "simplestream"}}}))
    report = json.loads(score(str(samples), "--mode", "official", "--json").stdout)
    assert report == plain and report["notes"][0].startswith("official scoring: OVO-Bench's score.py")


def test_table_output(samples):
    result = score(str(samples))
    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.split("│")[1:4]] for line in result.stdout.splitlines()]
    assert (
        ["realtime", "", "0.00"] in rows
        and ["OCR", "1", "0.00"] in rows
        and ["overall", "4", "50.00"] in rows
    )


def upstream_result(rows=("backward", "realtime", "forward")):
    epm, ocr, rec = RECORDS
    forward = {
        **rec,
        "test_info": [{**p, "response": r} for p, r in zip(rec["test_info"], ["1", "2 or 3"], strict=True)],
    }
    everything = {
        "backward": [
            {
                "id": 0,
                "video": epm["video"],
                "task": "EPM",
                "question": epm["question"],
                "response": "B",
                "ground_truth": "B",
            }
        ],
        "realtime": [
            {
                "id": 1,
                "video": ocr["video"],
                "task": "OCR",
                "question": ocr["question"],
                "response": "Answer: B",
                "ground_truth": "A",
            }
        ],
        "forward": [forward],
    }
    return {key: everything[key] for key in rows}


def test_upstream_ovo_file_is_detected_and_scored_officially(tmp_path):
    path = tmp_path / "LLaVA_OneVision_EPM_OCR_REC_offline_1.json"
    path.write_text(json.dumps(upstream_result()))
    report = json.loads(score(str(path), "--json").stdout)
    assert (report["bench"], report["mode"]) == ("ovo", "official")
    assert report["categories"] == OFFICIAL and report["overall"] == pytest.approx(250 / 3)


def test_a_folder_of_upstream_ovo_files_is_combined(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(upstream_result(("backward", "realtime"))))
    (tmp_path / "b.json").write_text(json.dumps(upstream_result(("forward",))))
    report = json.loads(score(str(tmp_path), "--json").stdout)
    assert report["n_total"] == 4 and report["overall"] == pytest.approx(250 / 3)


def test_bad_inputs_say_what_is_wrong(tmp_path, samples):
    cases = []
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "ovo/0", "bench": "ovo"}\n{oops\n')
    cases.append(([str(broken)], f"{broken}, line 2: not JSON"))
    strange = tmp_path / "strange.json"
    strange.write_text('{"results": []}')
    cases.append(([str(strange)], f"{strange}: not a result file stc knows; stc score reads a samples.jsonl"))
    cases.append(([str(tmp_path / "nope.jsonl")], "nope.jsonl: no such file or folder"))
    bad_mode = "--mode must be one of official, robust, stc, got 'strict'"
    cases.append(([str(samples), "--mode", "strict"], bad_mode))
    cases.append(([str(samples), "--bench", "mvbench"], "unknown benchmark 'mvbench'; known: ovo,"))
    for args, message in cases:
        result = score(*args)
        assert result.exit_code == 2, args
        assert message in result.stderr, (args, result.stderr)


@pytest.mark.filterwarnings("ignore:.*as upstream does")  # the fixture's odd time stamps
def test_streamingbench_annotated_json_is_detected(tmp_path):
    from tests.benchmarks.test_streamingbench import MODEL, SEGMENTS

    path = tmp_path / "questions_real_output_MyModel.json"
    path.write_text(json.dumps(SEGMENTS))
    report = json.loads(score(str(path), "--json").stdout)
    # The scorer's own test works this file out by hand: 3 right of 5 answered.
    assert (report["bench"], report["mode"], report["overall"], report["n_scored"]) == (
        "streamingbench",
        "official",
        60.0,
        5,
    )
    two_models = [{**s, "questions": [{**q, "Other": "A"} for q in s["questions"]]} for s in SEGMENTS]
    path.write_text(json.dumps(two_models))
    result = score(str(path))
    assert result.exit_code == 2 and "response_key" in result.stderr
    report = json.loads(score(str(path), "--response-key", MODEL, "--json").stdout)
    assert report["overall"] == 60.0
    for other in (samples_of(tmp_path), tmp_path / "ovo.json"):
        (tmp_path / "ovo.json").write_text(json.dumps(upstream_result()))
        result = score(str(other), "--response-key", MODEL)
        assert result.exit_code == 2
        assert f"--response-key applies to StreamingBench result files only, not to {other}" in result.stderr


def samples_of(tmp_path):
    queries = benchmarks.get("ovo").load_queries(write_ovo(tmp_path / "data").parent)
    path = tmp_path / "samples.jsonl"
    path.write_text(
        "".join(json.dumps({**q.to_record(), "response": "A", "error": None}) + "\n" for q in queries)
    )
    return path


def test_egoschema_full_set_writes_a_submission_not_a_score(tmp_path):
    from tests.benchmarks.test_egoschema import _write

    queries = benchmarks.get("egoschema").load_queries(
        _write(tmp_path, split="MC", answers={"v0": "", "v1": ""}), split="full"
    )
    path = tmp_path / "run" / "samples.jsonl"
    path.parent.mkdir()
    responses = {"v0": "B", "v1": "no idea"}
    path.write_text(
        "".join(
            json.dumps({**q.to_record(), "response": responses[q.extra["q_uid"]], "error": None}) + "\n"
            for q in queries
        )
    )
    result = score(str(path))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "egoschema_submission.json").read_text()) == {"v0": 1}
    assert "no score" in result.stdout and "written 1, unparsed 1, missing 0" in result.stdout


def test_table_lists_tasks_that_cut_across_categories(tmp_path):
    # Video-MME's categories are durations and every task occurs in each: tasks get their own section.
    from rich.console import Console

    from stc_cli.benchmarks.base import ScoreReport
    from stc_cli.tables import score_table

    report = ScoreReport(
        "videomme",
        "robust",
        50.0,
        {"short": 100.0, "long": 0.0},
        {"Counting Problem": 50.0},
        2,
        2,
        task_counts={"Counting Problem": 2},
    )
    console = Console(width=120, record=True)
    console.print(score_table(report))
    rows = [[c.strip() for c in line.split("│")[1:4]] for line in console.export_text().splitlines()]
    assert [row for row in rows if len(row) == 3] == [
        ["short", "", "100.00"],
        ["long", "", "0.00"],
        ["tasks", "", ""],
        ["Counting Problem", "2", "50.00"],
        ["overall", "2", "50.00"],
    ]
