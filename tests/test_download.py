"""`stc download` end to end: the real huggingface_hub client against a loopback fake hub, archives
built here, and `stc check` reading what the download left."""

import io
import json
import tarfile
import zipfile

import pytest
from typer.testing import CliRunner

from stc_cli.cli import app
from tests.videos import write_video

runner = CliRunner()
SB = "mjuicem/StreamingBench"
CSV_HEADER = "question_id,task_type,question,time_stamp,answer,options,frames_required,temporal_clue_type\n"
OPTIONS = "\"['A. red', 'B. blue', 'C. green', 'D. black']\""
CSV = CSV_HEADER + "".join(
    f"Real-Time Visual Understanding_sample_{n}_1,Counting,How many?,00:00:01,A,{OPTIONS},single,Prior\n"
    for n in (1, 51)
)


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def video_bytes(tmp_path):
    return write_video(tmp_path / "clip.mp4").read_bytes()


@pytest.fixture
def sb_hub(fake_hub, video_bytes):
    zips = {
        f"Real-Time Visual Understanding_{first}-{first + 49}.zip": zip_of(
            {
                f"Real-Time Visual Understanding_{first}-{first + 49}/sample_{first}/video.mp4": video_bytes,
                f"__MACOSX/Real-Time Visual Understanding_{first}-{first + 49}/._sample_{first}": b"junk",
            }
        )
        for first in (1, 51)
    }
    files = {
        "StreamingBench/Real_Time_Visual_Understanding.csv": CSV.encode(),
        **zips,
        "Omni_Source_Understanding.zip": b"not asked for",
    }
    fake_hub.add_repo(SB, files)
    return fake_hub


def download(hub, data_dir, *args):
    return runner.invoke(app, ["download", *args, "--data-dir", str(data_dir), "--endpoint", hub.url])


def listing(folder):
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and ".stc-download" not in p.parts
    )


def test_streamingbench_lands_in_the_layout_check_reads(sb_hub, tmp_path, video_bytes):
    result = download(sb_hub, tmp_path, "streamingbench")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "streamingbench"
    assert listing(folder) == [
        "Real_Time_Visual_Understanding.csv",
        "videos/sample_1/video.mp4",
        "videos/sample_51/video.mp4",
    ]
    assert (folder / "videos/sample_51/video.mp4").read_bytes() == video_bytes
    assert sb_hub.gets["Omni_Source_Understanding.zip"] == 0  # nothing else from the repository
    marker = json.loads((folder / ".stc-download/complete.json").read_text())
    assert marker["revision"] == sb_hub.shas[SB] and len(marker["files"]) == 3
    check = runner.invoke(app, ["check", "--bench", "streamingbench", "--data-dir", str(tmp_path), "--json"])
    assert check.exit_code == 0, check.output
    assert json.loads(check.stdout)["n_videos"] == 2


def test_second_run_is_a_no_op_and_a_removed_archive_resumes(sb_hub, tmp_path):
    download(sb_hub, tmp_path, "streamingbench")
    before = dict(sb_hub.gets)
    again = download(sb_hub, tmp_path, "streamingbench")
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    assert dict(sb_hub.gets) == before
    # Lose the second archive's video and its done marker (an interrupted run): only it is fetched again.
    folder = tmp_path / "streamingbench"
    (folder / "videos/sample_51/video.mp4").unlink()
    (folder / ".stc-download/complete.json").unlink()
    (folder / ".stc-download/done/Real-Time_Visual_Understanding_51-100.zip").unlink()
    resumed = download(sb_hub, tmp_path, "streamingbench")
    assert resumed.exit_code == 0, resumed.output
    zip_51 = "Real-Time Visual Understanding_51-100.zip"
    assert {p: n - before.get(p, 0) for p, n in sb_hub.gets.items() if n != before.get(p, 0)} == {zip_51: 1}
    assert (folder / "videos/sample_51/video.mp4").is_file()


def test_dry_run_lists_and_fetches_nothing(sb_hub, tmp_path):
    result = download(sb_hub, tmp_path, "streamingbench", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"streamingbench: {SB}@{sb_hub.shas[SB][:8]}: 3 of 3 items to fetch" in result.stdout
    assert "Real-Time Visual Understanding_51-100.zip" in result.stdout
    assert not any(sb_hub.gets.values()) and not (tmp_path / "streamingbench").exists()


def test_no_videos_fetches_the_metadata_only(sb_hub, tmp_path):
    result = download(sb_hub, tmp_path, "streamingbench", "--no-videos")
    assert result.exit_code == 0, result.output
    assert listing(tmp_path / "streamingbench") == ["Real_Time_Visual_Understanding.csv"]


def test_gated_dataset_needs_a_token_that_is_never_printed(fake_hub, tmp_path):
    fake_hub.add_repo(SB, {"StreamingBench/Real_Time_Visual_Understanding.csv": CSV.encode()}, gated=True)
    refused = download(fake_hub, tmp_path, "streamingbench", "--no-videos")
    assert refused.exit_code == 1 and "gated" in refused.stderr and "--token" in refused.stderr
    granted = download(fake_hub, tmp_path, "streamingbench", "--no-videos", "--token", fake_hub.token)
    assert granted.exit_code == 0, granted.output
    for result in (refused, granted):
        assert fake_hub.token not in result.output
    saved = "".join(
        p.read_text(errors="ignore") for p in (tmp_path / "streamingbench").rglob("*") if p.is_file()
    )
    assert fake_hub.token not in saved


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (zip_of({"Real-Time Visual Understanding_1-50/../../evil/sample_1/video.mp4": b"x"}), "outside"),
        (b"PK\x03\x04 this is not a zip", "corrupt"),
    ],
)
def test_unsafe_or_corrupt_archive_leaves_nothing_that_looks_complete(fake_hub, tmp_path, archive, message):
    fake_hub.add_repo(
        SB,
        {
            "StreamingBench/Real_Time_Visual_Understanding.csv": CSV.encode(),
            "Real-Time Visual Understanding_1-50.zip": archive,
        },
    )
    result = download(fake_hub, tmp_path, "streamingbench")
    assert result.exit_code == 1
    assert "Real-Time Visual Understanding_1-50.zip" in result.stderr and message in result.stderr
    folder = tmp_path / "streamingbench"
    assert not (folder / ".stc-download/complete.json").exists()
    assert not list(folder.rglob("*.zip")) and not (tmp_path / "evil").exists()


def test_ovo_split_tar_parts_are_streamed_into_src_videos(fake_hub, tmp_path, video_bytes):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("src_videos/Ego4D/clips/a.mp4")
        info.size = len(video_bytes)
        tar.addfile(info, io.BytesIO(video_bytes))
    data = buffer.getvalue()
    third = len(data) // 3
    parts = {
        f"src_videos.tar.parta{c}": data[i * third : (i + 1) * third if c != "c" else None]
        for i, c in enumerate("abc")
    }
    fake_hub.add_repo("JoeLeelyf/OVO-Bench", {**parts, "chunked_videos.tar.partaa": b"not asked for"})
    result = download(fake_hub, tmp_path, "ovo")
    assert result.exit_code == 0, result.output
    assert "data/ovo_bench_new.json" in result.stdout  # where to put the metadata by hand
    assert listing(tmp_path / "ovo") == ["src_videos/Ego4D/clips/a.mp4"]
    assert (tmp_path / "ovo/src_videos/Ego4D/clips/a.mp4").read_bytes() == video_bytes
    assert fake_hub.gets["chunked_videos.tar.partaa"] == 0


def test_not_enough_disk_space_is_refused_with_the_numbers(sb_hub, tmp_path, monkeypatch):
    import shutil

    from stc_cli import download as module

    monkeypatch.setattr(
        module.shutil, "disk_usage", lambda _path: shutil._ntuple_diskusage(10**12, 10**12, 1000)
    )
    result = download(sb_hub, tmp_path, "streamingbench")
    assert result.exit_code == 1
    assert "GB free under" in result.stderr and "the disk has 0.0 GB" in result.stderr
    assert not any(sb_hub.gets.values())


def test_unknown_benchmark_and_missing_repository(fake_hub, tmp_path):
    unknown = download(fake_hub, tmp_path, "mvbench")
    assert (
        unknown.exit_code == 1 and "unknown benchmark 'mvbench'; stc download knows: ovo," in unknown.stderr
    )
    missing = download(fake_hub, tmp_path, "videomme")
    assert missing.exit_code == 1 and "lmms-lab/Video-MME" in missing.stderr


def test_ovo_note_goes_once_the_metadata_is_in_place(fake_hub, tmp_path):
    fake_hub.add_repo("JoeLeelyf/OVO-Bench", {"src_videos.tar.partaa": b""})
    (tmp_path / "ovo").mkdir()
    (tmp_path / "ovo" / "ovo_bench_new.json").write_text("[]")
    result = download(fake_hub, tmp_path, "ovo", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "ovo: note:" not in result.stdout
