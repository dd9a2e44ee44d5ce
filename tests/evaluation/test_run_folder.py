"""The run folder's rules (``stc_cli/evaluation/run_folder.py``) as the runner applies them: nothing lost,
nothing doubled, one writer at a time, failed records healed by a rerun."""

import json
import os
import signal
import subprocess
import sys

import pytest

from stc_cli.evaluation.distributed import Shard
from stc_cli.evaluation.run_folder import FolderError, compact, locked
from stc_cli.evaluation.runner import RunFailed, run
from tests.evaluation.test_runner import TWO_FPS, RecordingModel, records


def lines(output):
    return (output / "samples.jsonl").read_text().splitlines()


@pytest.mark.parametrize("run_json", [None, "", "{not json", "[1, 2]"])
def test_records_without_readable_settings_are_refused_and_kept(data, tmp_path, run_json):
    folder, queries = data
    output = tmp_path / "run"
    run(RecordingModel(), queries[:3], folder, output, sampling=TWO_FPS)
    before = (output / "samples.jsonl").read_text()
    if run_json is None:
        (output / "run.json").unlink()
    else:
        (output / "run.json").write_text(run_json)
    state = "missing" if run_json is None else "unreadable"
    with pytest.raises(FolderError, match=f"holds 3 records but .*run.json is {state}.*--overwrite"):
        run(RecordingModel(), queries, folder, output, sampling=TWO_FPS)
    assert (output / "samples.jsonl").read_text() == before
    summary = run(RecordingModel(), queries, folder, output, sampling=TWO_FPS, overwrite=True)
    assert (summary.n_skipped, summary.n_written, len(lines(output))) == (0, 12, 12)


def test_a_folder_of_other_files_or_a_file_is_never_written_into(data, tmp_path):
    folder, queries = data
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "notes.txt").write_text("mine")
    (tmp_path / "project" / "samples.jsonl").write_text('{"id": "x"}\n')
    for overwrite in (False, True):
        with pytest.raises(FolderError, match=r"is not a run folder: it holds 1 other entries \(notes.txt\)"):
            run(
                RecordingModel(), queries, folder, tmp_path / "project", sampling=TWO_FPS, overwrite=overwrite
            )
    assert sorted(p.name for p in (tmp_path / "project").iterdir()) == ["notes.txt", "samples.jsonl"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FolderError, match="is a file"):
        run(RecordingModel(), queries, folder, tmp_path / "file", sampling=TWO_FPS)


def test_a_second_process_on_the_folder_is_refused_and_a_killed_holder_blocks_nothing(data, tmp_path):
    folder, queries = data
    output = tmp_path / "run"
    output.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from stc_cli.evaluation.run_folder import locked; "
            "from stc_cli.evaluation.distributed import Shard\n"
            "with locked(Path(sys.argv[1]), Shard()):\n    print('held', flush=True); time.sleep(60)",
            str(output),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(FolderError, match=f"in use by another stc eval \\(pid {holder.pid} on "):
            run(RecordingModel(), queries, folder, output, sampling=TWO_FPS)
        assert not (output / "samples.jsonl").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    summary = run(RecordingModel(), queries, folder, output, sampling=TWO_FPS)  # the lock died with it
    assert summary.n_written == 12


def test_the_lock_is_released_however_the_run_ends(data, tmp_path):
    folder, queries = data
    model = RecordingModel(fail_reset_after=0)
    with pytest.raises(RunFailed):
        run(model, queries, folder, tmp_path / "run", sampling=TWO_FPS, max_consecutive_errors=2)
    with locked(tmp_path / "run", Shard()):  # free again
        pass


def test_failed_records_are_retried_by_a_rerun_and_replaced_in_place(data, tmp_path):
    folder, queries = data
    run(RecordingModel(), queries, folder, tmp_path / "whole", sampling=TWO_FPS)
    output = tmp_path / "run"
    flaky = RecordingModel(fail_answer_on={"demo/clip_0/1", "demo/clip_2/3"})
    first = run(flaky, queries, folder, output, sampling=TWO_FPS)
    assert (first.n_written, first.n_errors, first.n_retried) == (12, 2, 0)
    assert first.first_error == "demo/clip_0/1: answering failed: RuntimeError: CUDA out of memory"
    healed = run(RecordingModel(), queries, folder, output, sampling=TWO_FPS)
    assert (healed.n_skipped, healed.n_written, healed.n_errors, healed.n_retried) == (10, 2, 0, 2)
    ids = lambda out: [json.loads(line)["id"] for line in lines(out)]  # noqa: E731
    assert ids(output) == ids(tmp_path / "whole")  # one record per query, in the uninterrupted order
    responses = lambda out: [r["response"] for r in records(out)]  # noqa: E731
    assert responses(output) == responses(tmp_path / "whole")
    again = run(RecordingModel(), queries, folder, output, sampling=TWO_FPS)
    assert (again.n_skipped, again.n_written, again.n_retried) == (12, 0, 0)


def test_compact_keeps_the_latest_record_of_an_id_in_the_place_of_its_first(tmp_path):
    samples = tmp_path / "samples.jsonl"
    rows = [{"id": "a", "v": 1}, {"id": "b", "v": 1}, {"id": "a", "v": 2}, {"id": "c", "v": 1}]
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert compact(samples) == 1
    assert [json.loads(line) for line in samples.read_text().splitlines()] == [
        {"id": "a", "v": 2},
        {"id": "b", "v": 1},
        {"id": "c", "v": 1},
    ]
    assert compact(samples) == 0


def test_a_broken_model_stops_the_run_after_so_many_failures_in_a_row(data, tmp_path):
    folder, queries = data
    model = RecordingModel(fail_answer_on={q.id for q in queries})
    with pytest.raises(
        RunFailed, match="stopped after 5 failed samples in a row.*the first: demo/clip_0/2: "
    ):
        run(model, queries, folder, tmp_path / "run", sampling=TWO_FPS, max_consecutive_errors=5)
    assert len(lines(tmp_path / "run")) == 5
    # a success in between restarts the count: clip_0's 4 queries fail, then clip_1's answer
    some = RecordingModel(fail_answer_on={q.id for q in queries if q.video == "videos/clip_0.mp4"})
    summary = run(some, queries, folder, tmp_path / "ok", sampling=TWO_FPS, max_consecutive_errors=5)
    assert (summary.n_written, summary.n_errors) == (12, 4)


def test_a_resumed_stream_run_bills_each_record_as_an_uninterrupted_run_does(data, tmp_path):
    folder, queries = data
    clip_1 = [q for q in queries if q.video == "videos/clip_1.mp4"]
    run(RecordingModel(), clip_1, folder, tmp_path / "whole", sampling=TWO_FPS)
    # the first run answered only the query at 1 s; the resumed one re-adds its 2 frames, unbilled
    run(
        RecordingModel(),
        [q for q in clip_1 if q.id == "demo/clip_1/2"],
        folder,
        tmp_path / "run",
        sampling=TWO_FPS,
    )
    run(RecordingModel(), clip_1, folder, tmp_path / "run", sampling=TWO_FPS)
    billed = lambda out: [(r["id"], r["frames"], r["counts"]) for r in records(out)]  # noqa: E731
    assert billed(tmp_path / "run") == billed(tmp_path / "whole")
    assert billed(tmp_path / "run")[1] == ("demo/clip_1/0", 12, {"visual_tokens_in": 1960, "new_tokens": 3})
