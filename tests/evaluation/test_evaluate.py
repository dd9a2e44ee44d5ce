"""`stc eval` end to end with ReKV on a tiny random LLaVA-OneVision over the demo benchmark."""

import json

import pytest
from typer.testing import CliRunner

from stc_cli.benchmarks import demo
from stc_cli.cli import app
from stc_cli.configs import EvalConfig
from stc_cli.evaluation.evaluate import plan
from tests.demo_small import DATA_DIR as DEMO_SMALL
from tests.demo_small import install
from tests.toy_model import answers, torchrun, untimed
from tests.videos import write_video

# The demo's first version (tests/demo_small.py: 3 clips, 12 questions), read in place.
TINY = ["--model-path", "random:tiny", "--bench", "demo", "--data-dir", str(DEMO_SMALL)]


def stc_eval(*args):
    """``stc eval`` on the tiny random model and the small demo; a later --model-path or --data-dir wins."""
    return CliRunner().invoke(app, ["eval", *TINY, *args])


def records(output):
    return [json.loads(line) for line in (output / "samples.jsonl").read_text().splitlines()]


@pytest.fixture
def data_dir(tmp_path):
    """A copy of the small demo benchmark that a test may break."""
    install(tmp_path / "data")
    return tmp_path / "data"


def test_a_run_writes_a_record_per_query_with_timings_and_counts(tmp_path):
    result = stc_eval("--output", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "12 samples written, 0 already there" in result.stdout
    written = records(tmp_path / "run")
    assert [r["id"] for r in written] == [q.id for q in sorted_by_video_and_time()]
    first = written[0]
    assert first["error"] is None and isinstance(first["response"], str)
    assert set(first["timings_ms"]) == {"decode", "vit", "compress", "prefill", "answer"}
    assert first["counts"]["visual_tokens_in"] == 16 * first["counts"]["frames_encoded"]
    assert first["counts"]["visual_tokens_kept"] == 5 * first["counts"]["frames_encoded"]  # 60/196 of 16
    # the demo's default protocol is STC's online harness: the prompt as it is, retrieval and prefill
    assert first["model_input"] == first["retrieval_input"] == first["prompt"]
    assert first["frame_times"] == [float(t) for t in range(first["frames"])]  # 1 fps from 0 s
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["schedule"] == "stream" and run["settings"]["model"]["stc"]["tokens_per_frame"] == 5
    protocol = run["settings"]["protocol"]
    assert (protocol["name"], protocol["fps"], protocol["max_new_tokens"]) == ("stc-online", 1.0, 128)
    assert run["environment"]["torch"] and "finished" in run


def sorted_by_video_and_time():
    queries = demo.load_queries(DEMO_SMALL)
    order = list(dict.fromkeys(q.video for q in queries))
    return sorted(queries, key=lambda q: (order.index(q.video), q.window[1]))


def test_no_stc_is_the_baseline_and_names_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert stc_eval("--no-stc", "--limit", "2").exit_code == 0
    written = records(tmp_path / "runs" / "rekv-demo-base")
    assert all("compress" not in r["timings_ms"] for r in written)
    counts = [r["counts"] for r in written]
    assert sum(c.get("frames_encoded", 0) for c in counts) > 0
    assert all(c.get("visual_tokens_kept") == c.get("visual_tokens_in") for c in counts)


def test_stream_and_clip_schedules_give_the_same_answers(tmp_path):
    assert stc_eval("--output", str(tmp_path / "stream"), "--schedule", "stream").exit_code == 0
    assert stc_eval("--output", str(tmp_path / "clip"), "--schedule", "clip").exit_code == 0
    stream = {r["id"]: (r["response"], r["frames"]) for r in records(tmp_path / "stream")}
    clip = {r["id"]: (r["response"], r["frames"]) for r in records(tmp_path / "clip")}
    assert stream == clip
    frames = lambda out: sum(r["counts"].get("frames_encoded", 0) for r in records(out))  # noqa: E731
    assert frames(tmp_path / "stream") == 18 < frames(tmp_path / "clip")  # 6 s at 1 fps, each video once


def test_vidcom2_in_the_pruner_s_place_keeps_the_same_budget_resumes_and_streams_as_clips(tmp_path):
    stream, clip = tmp_path / "stream", tmp_path / "clip"
    assert stc_eval("--compress", "vidcom2", "--output", str(stream)).exit_code == 0
    assert stc_eval("--compress", "vidcom2", "--output", str(clip), "--schedule", "clip").exit_code == 0
    frames = sum(r["counts"].get("frames_encoded", 0) for r in records(stream))
    kept_total = sum(r["counts"].get("visual_tokens_kept", 0) for r in records(stream))
    assert frames == 18 and kept_total == 5 * frames  # 5 of random:tiny's 16: STC's share, 60 of 196
    assert {r["id"]: r["response"] for r in records(stream)} == {
        r["id"]: r["response"] for r in records(clip)
    }
    settings = json.loads((stream / "run.json").read_text())["settings"]
    assert settings["config"]["compress"] == "vidcom2"
    assert {k: settings["model"]["stc"][k] for k in ("cacher", "pruner", "pruner_method")} == {
        "cacher": False,
        "pruner": True,
        "pruner_method": "vidcom2",
    }
    again = stc_eval("--compress", "vidcom2", "--output", str(stream))
    assert "0 samples written, 12 already there" in again.stdout
    assert (
        EvalConfig(compress="vidcom2").variant == "vidcom2" and EvalConfig(compress="none").variant == "base"
    )
    for argv, message in (
        (
            ("--compress", "fastv"),
            "--compress must be one of stc, none, tome, vidcom2, visionzip, dtd, lastn, got 'fastv'",
        ),
        (("--compress", "vidcom2", "--model", "livecc"), "--compress vidcom2 runs with --model rekv only"),
    ):
        result = stc_eval("--output", str(tmp_path / "refused"), *argv)
        assert result.exit_code == 2 and message in result.stderr


def test_dtd_keeps_each_video_s_first_frame_whole_resumes_and_streams_as_clips(tmp_path):
    stream, clip = tmp_path / "stream", tmp_path / "clip"
    assert stc_eval("--compress", "dtd", "--output", str(stream)).exit_code == 0
    assert stc_eval("--compress", "dtd", "--output", str(clip), "--schedule", "clip").exit_code == 0
    kept = sum(r["counts"].get("visual_tokens_kept", 0) for r in records(stream))
    assert kept == 3 * 16 + 15 * 5  # 3 videos of 6 frames: each first frame whole, then 5 of 16 (60 of 196)
    assert {r["id"]: r["response"] for r in records(stream)} == {
        r["id"]: r["response"] for r in records(clip)
    }
    model = json.loads((stream / "run.json").read_text())["settings"]["model"]
    assert model["stc"]["pruner_method"] == "dtd" and model["stc"]["dtd_threshold"] is None
    assert "12 already there" in stc_eval("--compress", "dtd", "--output", str(stream)).stdout
    threshold = tmp_path / "threshold"
    assert stc_eval("--compress", "dtd", "--dtd-threshold", "0.5", "--output", str(threshold)).exit_code == 0
    model = json.loads((threshold / "run.json").read_text())["settings"]["model"]
    assert model["stc"]["dtd_threshold"] == 0.5
    for argv, message in (
        (("--dtd-threshold", "0.5"), "--dtd-threshold applies to --compress dtd only"),
        (("--compress", "dtd", "--dtd-threshold", "2"), "--dtd-threshold is a cosine in [-1, 1], got 2.0"),
        (("--encode-chunk", "0"), "--encode-chunk must be >= 1, got 0"),
        (("--encode-chunk", "4", "--model", "livecc"), "--encode-chunk runs with --model rekv only"),
        (
            ("--compress", "dtd", "--model", "streamforest"),
            "--compress dtd runs with --model rekv, livecc, qwen3vl, qwen25vl only",
        ),
    ):
        result = stc_eval("--output", str(tmp_path / "refused"), *argv)
        assert result.exit_code == 2 and message in result.stderr


@pytest.mark.parametrize(("method", "kept_per_frame"), [("tome", 16), ("visionzip", 5)])
def test_tome_and_visionzip_resume_and_stream_as_clips(tmp_path, method, kept_per_frame):
    """ToMe leaves the LLM every pooled token (it merges inside the tower); VisionZip keeps STC's budget."""
    stream, clip = tmp_path / "stream", tmp_path / "clip"
    assert stc_eval("--compress", method, "--output", str(stream)).exit_code == 0
    assert stc_eval("--compress", method, "--output", str(clip), "--schedule", "clip").exit_code == 0
    assert sum(r["counts"].get("visual_tokens_kept", 0) for r in records(stream)) == 18 * kept_per_frame
    assert {r["id"]: r["response"] for r in records(stream)} == {
        r["id"]: r["response"] for r in records(clip)
    }
    assert "12 already there" in stc_eval("--compress", method, "--output", str(stream)).stdout
    model = json.loads((stream / "run.json").read_text())["settings"]["model"]
    assert (model["tome_r"] == [12, 11, 11]) == (method == "tome")  # 49 patches -> 15 (5 of 16) in 3 layers
    refused = stc_eval("--output", str(tmp_path / "refused"), "--compress", method, "--model", "livecc")
    assert refused.exit_code == 2 and f"--compress {method} runs with --model rekv only" in refused.stderr


def test_lastn_answers_from_the_last_frames_with_every_token_and_streams_as_clips(tmp_path):
    stream, clip = tmp_path / "stream", tmp_path / "clip"
    assert stc_eval("--compress", "lastn", "--last-frames", "2", "--output", str(stream)).exit_code == 0
    argv = ("--compress", "lastn", "--last-frames", "2", "--output", str(clip), "--schedule", "clip")
    assert stc_eval(*argv).exit_code == 0
    assert {r["id"]: r["response"] for r in records(stream)} == {
        r["id"]: r["response"] for r in records(clip)
    }
    kept = sum(r["counts"].get("visual_tokens_kept", 0) for r in records(stream))
    assert kept == 16 * 18  # every token of the 18 frames: nothing is pruned
    model = json.loads((stream / "run.json").read_text())["settings"]["model"]
    assert model["rekv"]["last_frames"] == 2 and not model["stc"]["cacher"] and not model["stc"]["pruner"]
    refused = stc_eval("--output", str(tmp_path / "refused"), "--compress", "lastn", "--last-frames", "0")
    assert refused.exit_code == 2 and "--last-frames must be >= 1, got 0" in refused.stderr


def test_an_interrupted_run_resumes_to_the_same_records(tmp_path):
    assert stc_eval("--output", str(tmp_path / "whole")).exit_code == 0
    assert stc_eval("--output", str(tmp_path / "cut")).exit_code == 0
    samples = tmp_path / "cut" / "samples.jsonl"
    lines = samples.read_text().splitlines(keepends=True)
    samples.write_text("".join(lines[:5]) + lines[5][:40])  # killed while writing the sixth record
    result = stc_eval("--output", str(tmp_path / "cut"))
    assert result.exit_code == 0 and "7 samples written, 5 already there" in result.stdout
    assert answers(tmp_path / "cut") == answers(tmp_path / "whole")
    again = stc_eval("--output", str(tmp_path / "cut"))
    assert "0 samples written, 12 already there" in again.stdout


def test_other_settings_in_the_same_folder_are_refused_unless_overwrite(tmp_path):
    out = str(tmp_path / "run")
    assert stc_eval("--output", out, "--limit", "2").exit_code == 0
    refused = stc_eval("--output", out, "--limit", "2", "--update-ratio", "0.5")
    assert refused.exit_code == 2 and "pass --overwrite" in refused.stderr
    assert len(records(tmp_path / "run")) == 2  # nothing lost
    assert stc_eval("--output", out, "--limit", "2", "--update-ratio", "0.5", "--overwrite").exit_code == 0


def test_the_pruner_window_is_recorded_and_another_one_refuses_to_resume(tmp_path):
    out = str(tmp_path / "run")
    assert stc_eval("--output", out, "--limit", "2", "--pruner-window", "2").exit_code == 0
    model = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]["model"]
    assert model["stc"]["pruner_window"] == 2
    changed = stc_eval("--output", out, "--limit", "2", "--pruner-window", "3")
    assert changed.exit_code == 2 and "settings.config.pruner_window: 2 there, 3 now" in changed.stderr


def test_harmless_changes_resume_and_answer_changing_ones_are_listed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert stc_eval("--output", "run", "--limit", "3").exit_code == 0
    # a raised --limit, the folder as an absolute path, --device cpu for what auto resolved to
    more = stc_eval("--output", str(tmp_path / "run"), "--limit", "5", "--device", "cpu")
    assert more.exit_code == 0 and "2 samples written, 3 already there" in more.stdout
    assert json.loads((tmp_path / "run" / "run.json").read_text())["selection"] == {
        "limit": 5,
        "tasks": [],
        "queries": 5,
    }
    changed = stc_eval("--output", "run", "--update-ratio", "0.5", "--topk", "8")
    assert changed.exit_code == 2
    assert "settings.config.update_ratio: None there, 0.5 now; settings.config.topk: 64 there, 8 now" in (
        changed.stderr
    )


def test_a_run_where_every_sample_fails_exits_1_and_a_broken_one_stops_early(tmp_path, data_dir):
    for video in (data_dir / "demo" / "videos").iterdir():
        video.write_bytes(b"not a video")
    every = stc_eval("--data-dir", str(data_dir), "--output", str(tmp_path / "all"))
    assert every.exit_code == 1 and len(records(tmp_path / "all")) == 12
    errors = [line for line in every.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: every sample failed; the first: demo/clip_0/2: ")
    early = stc_eval(
        "--data-dir", str(data_dir), "--output", str(tmp_path / "early"), "--max-consecutive-errors", "3"
    )
    assert early.exit_code == 1 and len(records(tmp_path / "early")) == 3
    assert "error: stopped after 3 failed samples in a row (--max-consecutive-errors)" in early.stderr
    assert "Traceback" not in early.output


def test_a_corrupt_video_becomes_error_records_and_the_run_goes_on(tmp_path, data_dir):
    (data_dir / "demo" / "videos" / "clip_1.mp4").write_bytes(b"not a video")
    result = stc_eval("--data-dir", str(data_dir), "--output", str(tmp_path / "run"))
    assert result.exit_code == 0 and "12 samples written, 0 already there, 4 failed" in result.stdout
    broken = [r for r in records(tmp_path / "run") if r["error"]]
    assert {r["video"] for r in broken} == {"videos/clip_1.mp4"} and len(broken) == 4
    assert all(r["response"] is None and "clip_1.mp4" in r["error"] for r in broken)


def test_bad_options_fail_before_any_model_is_built(tmp_path):
    cases = {
        ("--tasks", "colour"): "--tasks: demo has no task colour; known: color, direction, position",
        ("--limit", "0"): "--limit must be >= 1, got 0",
        ("--fps", "0"): "--fps must be > 0, got 0.0",
        ("--protocol", "live"): "unknown --protocol 'live' for --model rekv on --bench demo; known: "
        "stc-online, rekv-chat",
        ("--protocol", "livecc-ovo"): "livecc-ovo is for --model livecc --bench ovo",
        ("--schedule", "batch"): "--schedule must be one of auto, stream, clip, got 'batch'",
        ("--max-new-tokens", "0"): "--max-new-tokens must be >= 1, got 0",
        ("--pruner-memory", "forever"): "--pruner-memory must be video (or process, with --model rekv)",
        ("--model", "gpt"): "unknown --model 'gpt'; known: rekv",
        ("--tokens-per-frame", "17"): "--tokens-per-frame must be between 1 and 16, got 17",
        ("--update-ratio", "1.5"): "--update-ratio must be in (0, 1], got 1.5",
        ("--topk", "0"): "--topk must be >= 1, got 0",
        ("--device", "tpu9"): "--device must be auto, cpu, cuda or cuda:N, got 'tpu9'",
        ("--answer-mode", "logits"): "--answer-mode must be generate or logits, with --model livecc",
        ("--n-local", "-3"): "--n-local must be >= 1, got -3",
        ("--tokens-per-frame", "0"): "--tokens-per-frame must be >= 1, got 0",
        ("--max-cache-tokens", "0"): "--max-cache-tokens must be >= 1, got 0",
        ("--fps", "inf"): "--fps must be a finite number of frames per second, got inf",
        ("--fps", "nan"): "--fps must be a finite number of frames per second, got nan",
        ("--max-consecutive-errors", "-1"): "--max-consecutive-errors must be >= 0 (0: never stop), got -1",
        ("--pruner-window", "0"): "--pruner-window must be >= 1, got 0",
        ("--pruner-window", "-2"): "--pruner-window must be >= 1, got -2",
        ("--pruner-window", "4", "--no-pruner"): "--pruner-window applies to STC-Pruner only",
        ("--pruner-window", "4", "--no-stc"): "--pruner-window applies to STC-Pruner only",
        ("--pruner-window", "4", "--compress", "vidcom2"): "--pruner-window applies to STC-Pruner only",
        ("--max-blocks", "0"): "--max-blocks must be >= 1, got 0",
        ("--max-blocks", "8", "--model", "livecc"): "--max-blocks runs with --model rekv only, not livecc",
    }
    for flags, message in cases.items():
        result = stc_eval("--output", str(tmp_path / "run"), *flags)
        assert result.exit_code == 2, (flags, result.output)
        assert message in result.stderr, (flags, result.stderr)


def test_missing_metadata_names_the_file_and_the_fix(tmp_path):
    result = CliRunner().invoke(app, ["eval", "--bench", "mlvu", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "stc download mlvu" in result.stderr


def test_tasks_and_limit_choose_the_queries(data_dir):
    config = EvalConfig(bench="demo", data_dir=str(data_dir), tasks=("color", "direction"), limit=3)
    chosen = plan(config)
    assert [q.task for q in chosen.queries] == ["color", "direction", "color"][: len(chosen.queries)]
    assert len(chosen.queries) == 3 and (chosen.schedule, chosen.protocol.name) == ("stream", "stc-online")
    assert str(chosen.output) == "runs/rekv-demo-stc"


@pytest.mark.parametrize("model", ["rekv", "streamforest"])
def test_two_processes_under_torchrun_write_what_one_process_writes(tmp_path, model):
    one = stc_eval("--model", model, "--output", str(tmp_path / "one"))
    assert one.exit_code == 0
    two = torchrun(2, "-m", "stc_cli", "eval", *TINY, "--model", model, "--output", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr
    assert untimed(tmp_path / "two") == untimed(tmp_path / "one")


def test_the_clip_protocol_reads_ovo_pre_cut_clips_where_downloaded(tmp_path):
    from tests.ovo_fixture import write_ovo  # the OVO-Bench fixture of the benchmark tests

    folder = write_ovo(tmp_path)
    queries = plan(EvalConfig(bench="ovo", data_dir=str(tmp_path), schedule="clip")).queries
    clip = queries[0].extra["clip"]
    write_video(folder / clip, frames=2, fps=1)
    again = plan(EvalConfig(bench="ovo", data_dir=str(tmp_path), schedule="clip")).queries
    assert again[0].video == clip and queries[0].video != clip


def test_model_path_takes_a_saved_checkpoint_folder(tmp_path):
    from stc_cli.models import llava_ov

    llava_ov.save(llava_ov.build_random("tiny"), tmp_path / "ckpt")
    from_folder = stc_eval(
        "--model-path", str(tmp_path / "ckpt"), "--limit", "3", "--output", str(tmp_path / "a")
    )
    assert from_folder.exit_code == 0, from_folder.output
    assert stc_eval("--limit", "3", "--output", str(tmp_path / "b")).exit_code == 0
    assert answers(tmp_path / "a") == answers(tmp_path / "b")  # the same weights, read back
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["settings"]["model"]["model_path"] == str(tmp_path / "ckpt")


def test_livecc_stream_and_clip_give_the_same_answers(tmp_path):
    livecc = ["--model", "livecc", "--max-new-tokens", "4"]
    assert stc_eval(*livecc, "--output", str(tmp_path / "stream"), "--schedule", "stream").exit_code == 0
    assert stc_eval(*livecc, "--output", str(tmp_path / "clip"), "--schedule", "clip").exit_code == 0
    assert answers(tmp_path / "stream") != [] and sorted(answers(tmp_path / "stream")) == sorted(
        answers(tmp_path / "clip")
    )
    run = json.loads((tmp_path / "stream" / "run.json").read_text())
    assert run["settings"]["protocol"]["fps"] == 2.0 and run["settings"]["model"]["model"] == "livecc"
    assert (
        "livecc-stream keeps every chunk of a video in its KV cache"
        in stc_eval(*livecc, "--limit", "1", "--output", str(tmp_path / "one")).stderr
    )
    written = records(tmp_path / "stream")
    assert sum(r["counts"].get("frames_encoded", 0) for r in written) % 2 == 0  # whole 1-second chunks
    assert all(r["error"] is None for r in written)


def test_show_protocol_prints_each_setting_with_its_source_and_loads_nothing(tmp_path):
    result = CliRunner().invoke(
        app,
        ["eval", "--bench", "ovo", "--show-protocol", "--max-new-tokens", "16", "--output", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # the table folds long cells
    assert "--model rekv --bench ovo --protocol stc-online" in text
    assert "reading │ last-line │ [STC] ovobench/models/rekv.py:53-54" in text
    assert "max_new_tokens │ 16 │ changed by a flag" in text
    assert "other protocols: rekv-chat" in text and list(tmp_path.iterdir()) == []


def test_the_default_protocols_reproduce_the_released_harnesses():
    from stc_cli.evaluation.evaluate import protocol_of

    ovo = protocol_of(EvalConfig(bench="ovo"))
    assert (ovo.name, ovo.fps, ovo.sampling, ovo.retrieval, ovo.template) == (
        "stc-online", 1.0, "stride", "prompt", "plain"
    )  # fmt: skip
    assert (ovo.max_new_tokens, ovo.stop, ovo.first_token_rule, ovo.reading) == (
        128,
        "eos",
        True,
        "last-line",
    )
    mlvu = protocol_of(EvalConfig(bench="mlvu"))
    assert (mlvu.name, mlvu.fps, mlvu.retrieval, mlvu.template, mlvu.max_new_tokens) == (
        "stc-offline", 0.5, "question", "rekv-chat", 16
    )  # fmt: skip
    livecc = protocol_of(EvalConfig(model="livecc", bench="ovo"))
    assert (livecc.name, livecc.sampling, livecc.schedule, livecc.decoding) == (
        "livecc-ovo", "uniform", "clip", "candidate-logits"
    )  # fmt: skip


def test_livecc_ovo_runs_livecc_s_evaluation_on_the_source_videos(tmp_path):
    from tests.ovo_fixture import write_ovo

    folder = write_ovo(tmp_path)
    for name, seconds in (("Ego4D/a.mp4", 12), ("Ego4D/b.mp4", 4), ("perception_test/c.mp4", 6)):
        write_video(folder / "src_videos" / name, frames=4 * seconds, fps=4, size=(56, 84))
    args = [
        "--model",
        "livecc",
        "--bench",
        "ovo",
        "--data-dir",
        str(tmp_path),
        "--output",
        str(tmp_path / "run"),
    ]
    result = stc_eval(*args)
    assert result.exit_code == 0, result.output
    written = {r["id"]: r for r in records(tmp_path / "run")}
    assert all(r["error"] is None for r in written.values())
    assert {r["response"] for r in written.values()} <= {"No", "Yes", *"0123456789", *"ABCDE"}
    # EPM at realtime 10: frames ending in [0.25, 10] (0-39), 20 of them at 2 fps, spread evenly
    assert written["ovo/0"]["frame_times"] == [round(round(k * 39 / 19) / 4, 3) for k in range(20)]
    assert written["ovo/0"]["prompt"] == "Who spoke?\nA. a man\nB. a woman\nC. a child\nD. nobody\n" + (
        "Please select the correct answer."
    )
    assert written["ovo/2/0"]["window"] == [0.0, 2.0] and written["ovo/2/0"]["frames"] == 4
    assert written["ovo/0"]["model_input"].endswith("<|im_start|>assistant\nThe answer is:\n")


def test_streamforest_runs_the_demo_with_stc_on_and_off_in_both_protocols_resumes_and_reads_folders(tmp_path):
    import torch

    from stc_cli.models import streamforest_load

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: on two busy shared cores, OpenMP hand-offs cost 40x the work
    try:

        def run(name, *args):
            result = stc_eval("--model", "streamforest", "--output", str(tmp_path / name), *args)
            assert result.exit_code == 0, result.output
            return records(tmp_path / name)

        written = run("stc")
        assert [r["id"] for r in written] == [q.id for q in sorted_by_video_and_time()]
        assert all(r["error"] is None for r in written)
        first = written[0]  # clip_0/2 at 1 s: one frame
        assert set(first["timings_ms"]) == {"decode", "vit", "compress", "memory", "prefill", "answer"}
        assert first["counts"] == {
            "frames_encoded": 1, "visual_tokens_in": 49, "visual_tokens_kept": 15, "memory_tokens": 15,
            "new_tokens": first["counts"]["new_tokens"],
        }  # fmt: skip
        assert first["prompt"].endswith(
            "\nD. in the middle\nAnswer with the option's letter from the given choices directly."
        )
        assert first["model_input"] == (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n\n"
            "The video contains 1 frames sampled from the past 0.0 seconds ago (0.0s of the entire video) up "
            f"to the present moment (0.0s of the entire video). {first['prompt']}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        assert written[1]["frame_times"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # 6 s at 1 fps, stride from 0
        settings = json.loads((tmp_path / "stc" / "run.json").read_text())
        assert (settings["schedule"], settings["settings"]["protocol"]["memory"]) == ("stream", "question")
        assert settings["settings"]["model"]["memory"]["tokens"] == [15, 15]
        base = run("base", "--no-stc")
        assert all("compress" not in r["timings_ms"] for r in base)
        assert all(r["counts"].get("visual_tokens_kept") == r["counts"].get("visual_tokens_in") for r in base)
        assert sum(r["counts"].get("frames_encoded", 0) for r in base) == 18  # 6 s at 1 fps, each video once
        # one pass per video answers as one clip per question does, in both protocols
        assert {r["id"]: r["response"] for r in run("clip", "--schedule", "clip")} == {
            r["id"]: r["response"] for r in written
        }
        stream = run("stream", "--protocol", "streamforest-stream")
        assert stream[1]["counts"]["memory_tokens"] == written[1]["counts"]["memory_tokens"]
        stream_clip = run("stream-clip", "--protocol", "streamforest-stream", "--schedule", "clip")
        assert {r["id"]: r["response"] for r in stream_clip} == {r["id"]: r["response"] for r in stream}
        # resume after a cut, then nothing left to do
        samples = tmp_path / "stc" / "samples.jsonl"
        lines = samples.read_text().splitlines(keepends=True)
        samples.write_text("".join(lines[:5]) + lines[5][:40])
        resumed = stc_eval("--model", "streamforest", "--output", str(tmp_path / "stc"))
        assert "7 samples written, 5 already there" in resumed.stdout
        assert [(r["id"], r["response"]) for r in records(tmp_path / "stc")] == [
            (r["id"], r["response"]) for r in written
        ]
        # a saved checkpoint folder answers as the model it was saved from; another model's folder is refused
        folder = tmp_path / "checkpoint"
        streamforest_load.save(streamforest_load.build_random("tiny"), folder)
        from_folder = run("folder", "--model-path", str(folder), "--limit", "4")
        assert {r["id"]: r["response"] for r in from_folder} == {
            r["id"]: r["response"] for r in written if r["id"] in {f["id"] for f in from_folder}
        }
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "mm_projector_type": "mlp2x_gelu"}))
        refused = stc_eval(
            "--model", "streamforest", "--model-path", str(folder), "--output", str(tmp_path / "no")
        )
        assert refused.exit_code == 2 and "mm_projector_type is 'mlp2x_gelu'" in refused.stderr
    finally:
        torch.set_num_threads(threads)


def test_dispider_runs_the_demo_with_stc_on_and_off_in_both_protocols_resumes_and_reads_folders(tmp_path):
    import torch

    from stc_cli.models import dispider_load

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: on two busy shared cores, OpenMP hand-offs cost more
    try:

        def run(name, *args):
            out = str(tmp_path / name)
            result = stc_eval("--model", "dispider", "--max-new-tokens", "3", "--output", out, *args)
            assert result.exit_code == 0, result.output
            return records(tmp_path / name)

        def responses(written):
            return {r["id"]: r["response"] for r in written}

        written = run("stc")  # dispider-parity: clips rebuilt per question, 4 frames per clip in random:tiny
        assert [r["id"] for r in written] == [q.id for q in sorted_by_video_and_time()]
        assert all(r["error"] is None for r in written)
        first = written[0]  # clip_0 at 1 s: one frame held, round(1 / 4) -> 1 clip of 4 frames, all frame 0
        assert first["frame_times"] == [0.0, 0.0, 0.0, 0.0]
        assert first["counts"] == {
            "frames_encoded": 4, "visual_tokens_in": 16, "visual_tokens_kept": 4, "clips_perceived": 1,
            "clips": 1, "reaction_visual_tokens": 4 + 4 + 1, "new_tokens": first["counts"]["new_tokens"],
        }  # fmt: skip
        stages = {"decode", "vit", "compress", "perception", "decision", "prefill", "answer"}
        assert set(first["timings_ms"]) == stages
        # 6 s held: round(6 / 4) = 2 clips, get_seq_frames(6, 8): segment 5/8, ends 0 1 1 2 2 3 4 4 5
        assert written[1]["frame_times"] == [0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 4.0, 4.0]
        tail = f"USER: <visual: clips 0, 1>\n{written[1]['prompt']} ASSISTANT:"
        assert written[1]["model_input"].endswith(tail)
        settings = json.loads((tmp_path / "stc" / "run.json").read_text())
        assert settings["settings"]["model"]["stc"]["cache_interval"] == 4  # STC's Dispider setting
        assert settings["settings"]["protocol"]["clips"] == "question"
        base = run("base", "--no-stc")
        assert all("compress" not in r["timings_ms"] for r in base)
        assert all(r["counts"]["visual_tokens_kept"] == r["counts"]["visual_tokens_in"] for r in base)
        cacher_only = run("cacher", "--no-pruner", "--limit", "2")
        assert cacher_only[1]["counts"]["reaction_visual_tokens"] == 2 * (16 + 4) + 2  # every CLIP token
        assert responses(run("clip", "--schedule", "clip")) == responses(written)
        stream = run("stream", "--protocol", "dispider-stream")
        second = stream[1]["counts"]  # frames 1-5 added: clip 0-3 perceived once, 4-5 as a tail
        assert (second["frames_encoded"], second["clips_perceived"], second["clips_reused"]) == (5, 2, 1)
        assert stream[1]["frame_times"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        stream_clip = run("stream-clip", "--protocol", "dispider-stream", "--schedule", "clip")
        assert responses(stream_clip) == responses(stream)
        # resume after a cut, then nothing left to do
        samples = tmp_path / "stc" / "samples.jsonl"
        lines = samples.read_text().splitlines(keepends=True)
        samples.write_text("".join(lines[:5]) + lines[5][:40])
        resumed = stc_eval("--model", "dispider", "--max-new-tokens", "3", "--output", str(tmp_path / "stc"))
        assert "7 samples written, 5 already there" in resumed.stdout
        assert [(r["id"], r["response"]) for r in records(tmp_path / "stc")] == [
            (r["id"], r["response"]) for r in written
        ]
        # a checkpoint saved in the composite layout answers as the model it was saved from; a wrong one is
        # refused
        folder = tmp_path / "checkpoint"
        dispider_load.save(dispider_load.build_random("tiny"), folder)
        from_folder = run("folder", "--model-path", str(folder), "--limit", "4")
        same = {k: v for k, v in responses(written).items() if k in responses(from_folder)}
        assert responses(from_folder) == same
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "clip_projector_type": "linear"}))
        out = str(tmp_path / "no")
        refused = stc_eval("--model", "dispider", "--model-path", str(folder), "--output", out)
        assert refused.exit_code == 2 and "clip_projector_type is 'linear'" in refused.stderr
    finally:
        torch.set_num_threads(threads)


def test_qwen3vl_and_qwen25vl_run_simplestream_and_their_stream_on_the_demo_with_stc_on_and_off(tmp_path):
    """Both models under SimpleStream (the demo's default) with STC on and off, resumed after a cut and read
    from a saved folder; under qwenvl-stream one pass per video answers as one clip per question does."""
    import torch

    from stc_cli.models import qwen2vl, qwen3vl, qwen25vl

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on two busy shared cores, as above
    try:
        for model, module in (("qwen3vl", qwen3vl), ("qwen25vl", qwen25vl)):

            def run(name, *args, model=model):
                output = str(tmp_path / name)
                result = stc_eval("--model", model, "--max-new-tokens", "4", "--output", output, *args)
                assert result.exit_code == 0, result.output
                return records(tmp_path / name)

            written = run(f"{model}-stc")
            assert sorted(r["id"] for r in written) == sorted(q.id for q in sorted_by_video_and_time())
            assert all(r["error"] is None for r in written)
            whole = next(r for r in written if r["id"] == "demo/clip_0/0")  # asked at 6 s
            assert whole["frame_times"] == [2.0, 3.5, 4.5, 5.5]  # the frames of the last 4 one-second chunks
            counts = whole["counts"]
            kept = 4 * round(counts["visual_tokens_in"] // 4 * 60 / 196)  # STC's share of every frame
            assert counts["frames_encoded"] == 4 and counts["visual_tokens_kept"] == kept
            options = "\nA. red\nB. green\nC. blue\nD. yellow\n\nOnly give the best option's letter"
            assert whole["prompt"].endswith(options + " (A, B, C, or D) directly.")
            assert whole["model_input"] == f"\n{whole['prompt']}<|im_end|>\n<|im_start|>assistant\n"
            settings = json.loads((tmp_path / f"{model}-stc" / "run.json").read_text())
            protocol = settings["settings"]["protocol"]
            assert (settings["schedule"], protocol["name"], protocol["positions"], protocol["deepstack"]) == (
                "clip", "simplestream", "sequential", False
            )  # fmt: skip
            assert settings["settings"]["model"]["recent"]["recent_frames"] == 4
            base = run(f"{model}-base", "--no-stc")
            assert all(r["counts"]["visual_tokens_kept"] == r["counts"]["visual_tokens_in"] for r in base)
            assert all("compress" not in r["timings_ms"] for r in base)
            # resume after a cut, then nothing left to do
            samples = tmp_path / f"{model}-stc" / "samples.jsonl"
            lines = samples.read_text().splitlines(keepends=True)
            samples.write_text("".join(lines[:5]) + lines[5][:40])
            resumed = stc_eval("--model", model, "--max-new-tokens", "4", "--output", str(samples.parent))
            assert "7 samples written, 5 already there" in resumed.stdout
            assert [(r["id"], r["response"]) for r in records(samples.parent)] == [
                (r["id"], r["response"]) for r in written
            ]
            # a saved checkpoint folder answers as the model it was saved from
            folder = tmp_path / f"{model}-checkpoint"
            qwen2vl.save(module.load("random:tiny"), folder)
            from_folder = run(f"{model}-folder", "--model-path", str(folder), "--limit", "4", "--no-stc")
            assert [r["response"] for r in from_folder] == [r["response"] for r in base[:4]]
            # the stream protocol: a KV cache per video, STC on, the same answers in both schedules
            stream = run(f"{model}-stream", "--protocol", "qwenvl-stream", "--schedule", "stream")
            clip = run(f"{model}-clip", "--protocol", "qwenvl-stream", "--schedule", "clip")
            assert {r["id"]: r["response"] for r in stream} == {r["id"]: r["response"] for r in clip}
            assert sum(r["counts"].get("frames_encoded", 0) for r in stream) == 36  # 3 videos, 6 s at 2 fps
            assert all(r["error"] is None for r in stream)
    finally:
        torch.set_num_threads(threads)
