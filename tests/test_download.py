"""`stc download` end to end: the real huggingface_hub client against a loopback fake hub, archives
built here, and `stc check` reading what the download left."""

import hashlib
import io
import json
import re
import socket
import tarfile
import zipfile
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from stc_cli import download as module
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


def download(hub, data_dir, *args, github=None):
    """`stc download` against the fake hub, which also stands in for GitHub unless ``github`` is given."""
    options = ["--data-dir", str(data_dir), "--endpoint", hub.url, "--github-url", github or hub.url]
    return runner.invoke(app, ["download", *args, *options])


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


def test_ovo_split_tar_parts_are_streamed_into_src_videos(ovo_hub, tmp_path, video_bytes):
    result = download(ovo_hub, tmp_path, "ovo")
    assert result.exit_code == 0, result.output
    assert listing(tmp_path / "ovo") == ["ovo_bench_new.json", "src_videos/Ego4D/clips/a.mp4"]
    assert (tmp_path / "ovo/src_videos/Ego4D/clips/a.mp4").read_bytes() == video_bytes
    assert ovo_hub.gets["chunked_videos.tar.partaa"] == 0


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


# OVO-Bench's metadata comes from GitHub, not the hub. The real file (1640 records) is not available here:
# the tests serve a small one, and `small_ovo_metadata` makes the manifest expect its size and count.
OVO = "JoeLeelyf/OVO-Bench"
RAW = f"/{OVO}/c34093f/data/ovo_bench_new.json"
OVO_JSON = json.dumps([{"id": n, "task": "EPM", "video": f"{n}.mp4"} for n in range(3)]).encode()
OVO_SHA256 = hashlib.sha256(OVO_JSON).hexdigest()


def github_source(manifest):
    (source,) = [s for s in manifest.sources if isinstance(s, module.GithubFile)]
    return source


@pytest.fixture
def small_ovo_metadata(monkeypatch):
    manifest = module.MANIFESTS["ovo"]
    small = replace(github_source(manifest), size=len(OVO_JSON), records=3)
    sources = tuple(small if isinstance(s, module.GithubFile) else s for s in manifest.sources)
    monkeypatch.setitem(module.MANIFESTS, "ovo", replace(manifest, sources=sources))
    return small


@pytest.fixture
def ovo_hub(fake_hub, video_bytes, small_ovo_metadata):
    """OVO-Bench's hub repo (src_videos in three tar parts) and its metadata at the GitHub raw URL path."""
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
    fake_hub.add_repo(OVO, {**parts, "chunked_videos.tar.partaa": b"not asked for"})
    fake_hub.raw[RAW] = OVO_JSON
    return fake_hub


def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def assert_nothing_left(folder):
    """No metadata file, no partial download, no completion marker."""
    assert not (folder / "ovo_bench_new.json").exists()
    assert not list(folder.rglob("*.part")) and not list(folder.rglob("*ovo_bench_new*"))
    assert not (folder / ".stc-download/complete.json").exists()


def test_default_manifest_pins_the_real_ovo_metadata():
    source = github_source(module.MANIFESTS["ovo"])
    assert (source.repo, source.commit, source.pattern) == (OVO, "c34093f", "data/ovo_bench_new.json")
    assert (source.size, source.records) == (918_443, 1640)
    assert source.pattern.removeprefix(source.strip) == "ovo_bench_new.json" and not source.videos
    assert source.sha256 is None or re.fullmatch("[0-9a-f]{64}", source.sha256)  # None until verified


def test_ovo_metadata_is_fetched_from_github_and_its_sha256_recorded(ovo_hub, tmp_path):
    result = download(ovo_hub, tmp_path, "ovo")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "ovo"
    assert (folder / "ovo_bench_new.json").read_bytes() == OVO_JSON
    assert ovo_hub.gets[RAW] == 1
    marker = json.loads((folder / ".stc-download/complete.json").read_text())
    assert marker["sha256"] == {"data/ovo_bench_new.json": OVO_SHA256}
    assert marker["files"]["data/ovo_bench_new.json"] == len(OVO_JSON)
    assert not list(folder.rglob("*.part"))
    again = download(ovo_hub, tmp_path, "ovo")
    assert again.exit_code == 0 and "nothing to do" in again.stdout and ovo_hub.gets[RAW] == 1


def test_ovo_metadata_is_fetched_once_across_runs(ovo_hub, tmp_path):
    first = download(ovo_hub, tmp_path, "ovo", "--no-videos")
    assert first.exit_code == 0, first.output
    assert listing(tmp_path / "ovo") == ["ovo_bench_new.json"]
    second = download(ovo_hub, tmp_path, "ovo")  # now the videos: the metadata is done already
    assert second.exit_code == 0, second.output
    assert ovo_hub.gets[RAW] == 1
    marker = json.loads((tmp_path / "ovo/.stc-download/complete.json").read_text())
    assert marker["sha256"] == {"data/ovo_bench_new.json": OVO_SHA256}


def test_ovo_metadata_placed_by_hand_is_checked_not_fetched(ovo_hub, tmp_path):
    (tmp_path / "ovo").mkdir()
    (tmp_path / "ovo/ovo_bench_new.json").write_bytes(OVO_JSON)
    result = download(ovo_hub, tmp_path, "ovo", "--no-videos", github=closed_port_url())
    assert result.exit_code == 0, result.output
    assert ovo_hub.gets[RAW] == 0
    marker = json.loads((tmp_path / "ovo/.stc-download/complete.json").read_text())
    assert marker["sha256"] == {"data/ovo_bench_new.json": OVO_SHA256}


def test_wrong_ovo_metadata_placed_by_hand_is_refused_and_kept(ovo_hub, tmp_path):
    target = tmp_path / "ovo/ovo_bench_new.json"
    target.parent.mkdir()
    target.write_text("[]")
    result = download(ovo_hub, tmp_path, "ovo", "--no-videos")
    assert result.exit_code == 1
    assert f"{target} is not the expected file: 2 bytes, not {len(OVO_JSON)}" in result.stderr
    assert target.read_text() == "[]" and ovo_hub.gets[RAW] == 0  # the user's file: left for them to see
    assert not (target.parent / ".stc-download/complete.json").exists()


@pytest.mark.parametrize(
    ("serve", "github", "message"),
    [
        (None, closed_port_url, "Could not fetch http://127.0.0.1:"),
        (None, None, f"Could not fetch http://127.0.0.1:{{port}}{RAW} (HTTP 404"),
        (OVO_JSON + b" ", None, f"{RAW} is not the expected file: {len(OVO_JSON) + 1:,} bytes, not"),
        (b"x" + OVO_JSON[1:], None, f"{RAW} is not the expected file: not valid JSON"),
        (json.dumps([{}] * 4).encode().ljust(len(OVO_JSON)), None, "not a JSON list of 3 records"),
        (b"{}".ljust(len(OVO_JSON)), None, "not a JSON list of 3 records"),
        (b"[1, 2, 3]".ljust(len(OVO_JSON)), None, "a record is not a JSON object"),
    ],
    ids=["unreachable", "404", "size", "not-json", "count", "not-a-list", "not-objects"],
)
def test_ovo_metadata_failure_says_where_to_place_it_and_leaves_nothing(
    ovo_hub, tmp_path, serve, github, message
):
    if serve is not None:
        ovo_hub.raw[RAW] = serve
    else:
        del ovo_hub.raw[RAW]
    github_url = github() if github else None
    result = download(ovo_hub, tmp_path, "ovo", github=github_url)
    assert result.exit_code == 1
    port = ovo_hub.url.rsplit(":", 1)[1]
    assert message.format(port=port) in result.stderr
    target = tmp_path / "ovo" / "ovo_bench_new.json"
    assert (
        f"place data/ovo_bench_new.json of the GitHub repository {OVO} (commit c34093f, "
        f"{len(OVO_JSON):,} bytes) at {target} by hand" in result.stderr
    )
    assert_nothing_left(tmp_path / "ovo")
    assert not any(ovo_hub.gets[p] for p in ovo_hub.gets if p.startswith("src_videos"))  # metadata first


def test_ovo_metadata_sha256_is_checked_once_pinned(ovo_hub, tmp_path, monkeypatch, small_ovo_metadata):
    pinned = replace(small_ovo_metadata, sha256="0" * 64)
    manifest = module.MANIFESTS["ovo"]
    sources = tuple(pinned if isinstance(s, module.GithubFile) else s for s in manifest.sources)
    monkeypatch.setitem(module.MANIFESTS, "ovo", replace(manifest, sources=sources))
    result = download(ovo_hub, tmp_path, "ovo", "--no-videos")
    assert result.exit_code == 1 and f"sha256 {OVO_SHA256}, not {'0' * 64}" in result.stderr
    assert_nothing_left(tmp_path / "ovo")


def test_ovo_dry_run_lists_the_github_metadata_with_its_size(ovo_hub, tmp_path):
    result = download(ovo_hub, tmp_path, "ovo", "--dry-run")
    assert result.exit_code == 0, result.output
    assert re.search(r"github +0\.0 MB  data/ovo_bench_new\.json", result.stdout)
    assert ovo_hub.gets[RAW] == 0 and not (tmp_path / "ovo").exists()


def test_ovo_metadata_fetch_gives_up_on_a_silent_server(ovo_hub, tmp_path, monkeypatch):
    monkeypatch.setattr(module, "GITHUB_TIMEOUT", 0.2)
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        result = download(ovo_hub, tmp_path, "ovo", github=f"http://127.0.0.1:{silent.getsockname()[1]}")
    assert result.exit_code == 1 and "(timed out); place data/ovo_bench_new.json" in result.stderr
    assert_nothing_left(tmp_path / "ovo")
