import json

from typer.testing import CliRunner

from stc_cli.cli import app
from tests.ovo_fixture import write_ovo
from tests.videos import write_video

runner = CliRunner()


def check(*args):
    return runner.invoke(app, ["check", *args])


def test_metadata_only_counts_queries_per_task(tmp_path):
    write_ovo(tmp_path)
    result = check("--bench", "ovo", "--data-dir", str(tmp_path), "--metadata-only", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # EPM and OCR: one question each; REC: one query per probe, 2 probes.
    assert (report["bench"], report["n_queries"], report["tasks"]) == (
        "ovo",
        4,
        {"EPM": 1, "OCR": 1, "REC": 2},
    )
    assert report["missing_videos"] == [] and report["videos_checked"] is False
    # windows end at ceil(realtime): a 10, b 4, c 2 and 5 -> stream reads 10 + 4 + 5, clip 10 + 4 + 2 + 5
    assert report["video_seconds"] == {"stream": 19.0, "clip": 21.0, "open_ended": 0}
    table = check("--bench", "ovo", "--data-dir", str(tmp_path), "--metadata-only").stdout
    assert "clip schedule" in table and "21 (1.11x)" in table


def test_missing_and_broken_videos_exit_1(tmp_path):
    folder = write_ovo(tmp_path)
    write_video(folder / "src_videos/Ego4D/a.mp4")
    (folder / "src_videos/Ego4D/b.mp4").write_bytes(b"not a video")
    write_video(
        folder / "chunked_videos/2_0.mp4"
    )  # probe 0 of item 2 has its pre-cut clip; probe 1 has nothing
    result = check("--bench", "ovo", "--data-dir", str(tmp_path), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["n_videos"] == 3
    assert report["missing_videos"] == ["src_videos/perception_test/c.mp4"]
    assert report["unreadable_videos"] == ["src_videos/Ego4D/b.mp4"]
    summary = check("--bench", "ovo", "--data-dir", str(tmp_path)).stdout.strip().splitlines()[-1]
    assert summary == (
        f"ovo: 1 of 3 videos missing (first: src_videos/perception_test/c.mp4); 1 cannot be opened "
        f"(first: src_videos/Ego4D/b.mp4) under {tmp_path / 'ovo'}; `stc download ovo` fetches them"
    )


def test_complete_data_exits_0(tmp_path, monkeypatch):
    folder = write_ovo(tmp_path)
    for video in ("Ego4D/a.mp4", "Ego4D/b.mp4", "perception_test/c.mp4"):
        write_video(folder / "src_videos" / video)
    monkeypatch.setenv("STC_DATA_DIR", str(tmp_path))  # the default data directory
    result = check("--bench", "ovo")
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.strip().splitlines()[-1] == f"ovo: complete: 4 queries, 3 videos in {tmp_path / 'ovo'}"
    )


def test_unreadable_metadata_exits_2_naming_the_file(tmp_path):
    folder = write_ovo(tmp_path)
    (folder / "ovo_bench_new.json").write_text("[{")
    result = check("--bench", "ovo", "--data-dir", str(tmp_path))
    assert result.exit_code == 2
    assert str(folder / "ovo_bench_new.json") in result.stderr


def test_unknown_benchmark_lists_the_known_ones(tmp_path):
    result = check("--bench", "ovobench", "--data-dir", str(tmp_path))
    assert result.exit_code == 2
    assert (
        "unknown benchmark 'ovobench'; known: ovo, streamingbench, mlvu, egoschema, videomme" in result.stderr
    )


def test_demo_is_checked_before_download_from_the_packaged_copy(tmp_path):
    # As `stc eval --bench demo` does: the copy shipped in the package, with the same note.
    from stc_cli.benchmarks import demo

    result = check("--bench", "demo", "--data-dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "note: demo: using the copy shipped in the package"
    report = json.loads(result.stdout)
    assert (report["n_queries"], report["n_videos"], report["complete"]) == (64, 16, True)
    assert report["folder"] == str(demo.PACKAGED) and report["notes"] == [
        "demo: using the copy shipped in the package"
    ]
    assert not (tmp_path / "demo").exists()
    downloaded = runner.invoke(app, ["download", "demo", "--data-dir", str(tmp_path)])
    assert downloaded.exit_code == 0, downloaded.output
    after = check("--bench", "demo", "--data-dir", str(tmp_path), "--json")  # its own copy now, no note
    assert after.exit_code == 0 and not after.stderr.strip() and json.loads(after.stdout)["notes"] == []
    assert json.loads(after.stdout)["folder"] == str(tmp_path / "demo")
