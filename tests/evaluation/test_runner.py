import json

import pytest

from stc_cli.evaluation.run_folder import read_records
from stc_cli.evaluation.runner import run
from stc_cli.models.base import Answer, Step
from stc_cli.video import Sampling

TWO_FPS = Sampling(2.0)


class RecordingModel:
    """A stand-in model that answers from its memory alone: how many frames it holds, the last one's time
    and the sum of their mean pixel values. It records every call."""

    def __init__(self, fail_answer_on=(), fail_add_after=None, fail_reset_after=None):
        self.calls, self.memory = [], []
        self.fail_answer_on, self.fail_add_after = set(fail_answer_on), fail_add_after
        self.fail_reset_after = fail_reset_after

    def reset(self):
        resets = sum(call == ("reset",) for call in self.calls)
        self.calls.append(("reset",))
        if self.fail_reset_after is not None and resets >= self.fail_reset_after:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        self.memory = []

    def add_frames(self, frames, times):
        self.calls.append(("add", times))
        if self.fail_add_after is not None and len(self.memory) >= self.fail_add_after:
            raise RuntimeError("CUDA out of memory")
        self.memory += [(t, int(frame.float().mean())) for frame, t in zip(frames, times, strict=True)]
        return Step({"vit": 1.0}, {"visual_tokens_in": 196 * len(times)})

    def answer(self, query):
        if query.id in self.fail_answer_on:
            raise RuntimeError("CUDA out of memory")
        memory = self.memory
        text = f"{len(memory)} frames, last at {memory[-1][0]}, sum {sum(m for _, m in memory)}"
        return Answer({"answer": 2.0}, {"new_tokens": 3}, text=text, model_input=f"Q: {query.prompt}")


def records(output):
    return [json.loads(line) for line in (output / "samples.jsonl").read_text().splitlines()]


def test_stream_and_clip_give_the_same_answers(data, tmp_path):
    folder, queries = data
    stream_model, clip_model = RecordingModel(), RecordingModel()
    run(stream_model, queries, folder, tmp_path / "stream", sampling=TWO_FPS)
    run(clip_model, queries, folder, tmp_path / "clip", schedule="clip", sampling=TWO_FPS)
    stream = {r["id"]: r["response"] for r in records(tmp_path / "stream")}
    clip = {r["id"]: r["response"] for r in records(tmp_path / "clip")}
    assert stream == clip and len(stream) == 12
    assert stream["demo/clip_0/2"].startswith("2 frames, last at 0.5")  # t < 1 s at 2 fps: 0 and 0.5
    # 12 frames per 6 s clip at 2 fps. Stream: each encoded once, 36. Clip: per video 12 + 12 + 2 + 12 = 38.
    added = lambda model: sum(len(call[1]) for call in model.calls if call[0] == "add")  # noqa: E731
    assert (added(stream_model), added(clip_model)) == (36, 114)


def test_stream_encodes_each_video_once_in_time_order(data, tmp_path):
    folder, queries = data
    model = RecordingModel()
    run(
        model,
        [q for q in queries if q.video == "videos/clip_1.mp4"],
        folder,
        tmp_path / "run",
        sampling=TWO_FPS,
    )
    assert model.calls == [("reset",), ("add", (0.0, 0.5)), ("add", tuple(t / 2 for t in range(2, 12)))]
    written = records(tmp_path / "run")
    assert [r["id"] for r in written] == ["demo/clip_1/2", "demo/clip_1/0", "demo/clip_1/1", "demo/clip_1/3"]
    first, second = written[0], written[1]
    assert (
        set(first["timings_ms"]) == {"decode", "vit", "answer"} and first["counts"]["visual_tokens_in"] == 392
    )
    # frames are decoded when a query needs them: the second record pays for decoding its 10 frames
    assert set(second["timings_ms"]) == {"decode", "vit", "answer"}
    assert second["counts"]["visual_tokens_in"] == 1960
    assert written[2]["counts"] == {"new_tokens": 3} and [r["frames"] for r in written] == [2, 12, 12, 12]


def test_a_record_holds_the_answer_as_read_the_whole_response_and_what_the_model_saw(data, tmp_path):
    folder, queries = data
    clip_1 = [q for q in queries if q.video == "videos/clip_1.mp4"]
    run(RecordingModel(), clip_1, folder, tmp_path / "run", sampling=TWO_FPS, read=lambda text: text[:8])
    first, second = records(tmp_path / "run")[:2]
    assert (first["response"], first["full_response"]) == ("2 frames", first["full_response"])
    assert first["full_response"].startswith("2 frames, last at 0.5, sum")
    assert first["frame_times"] == [0.0, 0.5] and second["frame_times"] == [t / 2 for t in range(12)]
    assert first["model_input"] == "Q: " + clip_1[2].prompt and first["retrieval_input"] is None


def test_frames_are_decoded_and_added_in_bounded_batches_with_the_same_answers(data, tmp_path, monkeypatch):
    folder, queries = data
    clip_1 = [q for q in queries if q.video == "videos/clip_1.mp4"]
    whole = RecordingModel()
    run(whole, clip_1, folder, tmp_path / "whole", sampling=TWO_FPS)
    monkeypatch.setattr("stc_cli.evaluation.runner.DECODE_BATCH", 4)
    batched = RecordingModel()
    run(batched, clip_1, folder, tmp_path / "batched", sampling=TWO_FPS)
    # 2 frames for the first query, then 10 more in batches of 4, 4 and 2
    assert [len(call[1]) for call in batched.calls if call[0] == "add"] == [2, 4, 4, 2]
    responses = lambda out: [r["response"] for r in records(out)]  # noqa: E731
    assert responses(tmp_path / "batched") == responses(tmp_path / "whole")


def test_resume_after_a_crash_equals_one_run(data, tmp_path):
    folder, queries = data
    run(RecordingModel(), queries, folder, tmp_path / "whole", sampling=TWO_FPS)
    output = tmp_path / "resumed"
    run(RecordingModel(), queries[:5], folder, output, sampling=TWO_FPS)
    with open(output / "samples.jsonl", "a") as sink:
        sink.write('{"id": "demo/clip_1/3", "resp')  # killed in the middle of a write
    heard = []
    summary = run(RecordingModel(), queries, folder, output, sampling=TWO_FPS, on_start=heard.append)
    assert (summary.n_skipped, summary.n_written, summary.n_errors) == (5, 7, 0)
    assert heard == [7]  # told before the first record what is left to write
    by_id = lambda rows: {r["id"]: r["response"] for r in rows}  # noqa: E731
    assert by_id(records(output)) == by_id(records(tmp_path / "whole")) and len(records(output)) == 12


def test_a_run_from_before_a_setting_existed_resumes_at_its_default_only(data, tmp_path):
    """A run.json written before ``cuda_graphs`` and ``pruner_window`` existed: the settings it lacks
    count as their defaults (as the older run had them), so it resumes with those and no other."""
    folder, queries = data
    older = {"model": {"rekv": {"topk": 64}, "stc": {"cacher": True}}}
    run(RecordingModel(), queries[:2], folder, tmp_path / "run", sampling=TWO_FPS, settings=older)
    now = {
        "model": {"rekv": {"topk": 64, "cuda_graphs": True}, "stc": {"cacher": True, "pruner_window": None}}
    }
    summary = run(RecordingModel(), queries, folder, tmp_path / "run", sampling=TWO_FPS, settings=now)
    assert summary.n_skipped == 2 and len(records(tmp_path / "run")) == 12
    now["model"]["stc"]["pruner_window"] = 3
    with pytest.raises(ValueError, match="model.stc.pruner_window: None there, 3 now"):
        run(RecordingModel(), queries, folder, tmp_path / "run", sampling=TWO_FPS, settings=now)


def test_other_settings_are_refused_unless_overwrite(data, tmp_path):
    folder, queries = data
    run(RecordingModel(), queries[:2], folder, tmp_path / "run", sampling=TWO_FPS, settings={"stc": True})
    with pytest.raises(ValueError, match="holds a run with other settings.*--overwrite"):
        run(RecordingModel(), queries, folder, tmp_path / "run", sampling=TWO_FPS, settings={"stc": False})
    summary = run(
        RecordingModel(),
        queries,
        folder,
        tmp_path / "run",
        sampling=TWO_FPS,
        settings={"stc": False},
        overwrite=True,
    )
    assert summary.n_skipped == 0 and len(records(tmp_path / "run")) == 12


def test_the_environment_is_recorded_not_checked(data, tmp_path):
    folder, queries = data
    run(
        RecordingModel(),
        queries[:2],
        folder,
        tmp_path / "run",
        sampling=TWO_FPS,
        environment={"torch": "2.4"},
    )
    summary = run(
        RecordingModel(), queries, folder, tmp_path / "run", sampling=TWO_FPS, environment={"torch": "2.13"}
    )
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary.n_skipped == 2 and saved["environment"] == {"torch": "2.13"} and saved["world"] == 1


def test_failures_are_recorded_and_the_run_goes_on(data, tmp_path):
    folder, queries = data
    (folder / "videos/clip_2.mp4").unlink()
    model = RecordingModel(fail_answer_on={"demo/clip_0/1"})
    summary = run(model, queries, folder, tmp_path / "run", sampling=TWO_FPS)
    errors = {r["id"]: r["error"] for r in records(tmp_path / "run") if r["error"]}
    assert summary.n_errors == 5 and set(errors) == {"demo/clip_0/1"} | {f"demo/clip_2/{k}" for k in range(4)}
    assert errors["demo/clip_0/1"] == "answering failed: RuntimeError: CUDA out of memory"
    assert "clip_2.mp4: no such video" in errors["demo/clip_2/0"]
    # A failed add leaves the memory unknown: the video's later queries are errors too, others go on.
    broken = RecordingModel(fail_add_after=2)
    run(
        broken,
        [q for q in queries if q.video == "videos/clip_0.mp4"],
        folder,
        tmp_path / "broken",
        sampling=TWO_FPS,
    )
    assert [bool(r["error"]) for r in records(tmp_path / "broken")] == [False, True, True, True]
    # A sticky CUDA error fails the next reset: that video's queries (each query, in the clip schedule)
    # become error records and the run still writes every record.
    for schedule in ("stream", "clip"):
        sticky = RecordingModel(fail_reset_after=1)
        summary = run(sticky, queries[:8], folder, tmp_path / schedule, schedule=schedule, sampling=TWO_FPS)
        written = records(tmp_path / schedule)
        assert len(written) == 8 and summary.n_errors == (4 if schedule == "stream" else 7)
        assert written[-1]["error"].startswith("resetting the model failed: RuntimeError: CUDA error")


def test_bad_runs_are_refused(data, tmp_path):
    folder, queries = data
    with pytest.raises(ValueError, match="--schedule must be one of stream, clip"):
        run(RecordingModel(), queries, folder, tmp_path / "a", schedule="batch")
    late = [q.__class__(**{**q.__dict__, "window": (2.0, 6.0)}) for q in queries[:1]]
    with pytest.raises(ValueError, match="stream schedule needs windows that start at 0"):
        run(RecordingModel(), late, folder, tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "samples.jsonl").write_text('oops\n{"id": "x"}\n')
    with pytest.raises(ValueError, match="line 1: not a record"):
        read_records(tmp_path / "c" / "samples.jsonl")


def test_stc_score_reads_the_run_folder(data, tmp_path):
    from stc_cli.scoring import score_results

    folder, queries = data
    run(RecordingModel(), queries, folder, tmp_path / "run", sampling=TWO_FPS)
    report = score_results(tmp_path / "run")
    # "12 frames, last at 5.5, sum ..." commits to no option letter: all 12 unparsed, so wrong.
    assert (report.bench, report.mode, report.n_total, report.n_unparsed, report.overall) == (
        "demo",
        "robust",
        12,
        12,
        0.0,
    )
