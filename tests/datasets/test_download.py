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
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stc_cli.cli import app
from stc_cli.datasets import download as module
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


def messages(result):
    """stderr without the progress lines a log gets (stderr is not a terminal under CliRunner)."""
    return [line for line in result.stderr.strip().splitlines() if not line.startswith("stc download ")]


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
    # stderr is not a terminal here, as under SLURM or nohup: plain progress lines, the last at 100 %
    total = sum(marker["files"].values()) / 1e6
    lines = [line for line in result.stderr.splitlines() if line.startswith("stc download streamingbench:")]
    assert lines[0] == f"stc download streamingbench: {total:.1f} MB to do"
    assert lines[-1].startswith(f"stc download streamingbench: {total:.1f}/{total:.1f} MB (100%)")
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

    from stc_cli.datasets import download as module

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
        unknown.exit_code == 2 and "unknown benchmark 'mvbench'; stc download knows: ovo," in unknown.stderr
    )
    missing = download(fake_hub, tmp_path, "videomme")
    assert missing.exit_code == 1 and "lmms-lab/Video-MME" in missing.stderr


# OVO-Bench's metadata comes from GitHub, not the hub. The real file (1640 records) is not available here:
# the tests serve a small one, and `small_ovo_metadata` makes the manifest expect its size and count, with
# no sha256 pinned (so that the other checks are seen); tests that pin one say so.
OVO = "JoeLeelyf/OVO-Bench"
OVO_COMMIT = "c34093f9a072d93f9e1c6b923446dfba71f4528e"  # raw GitHub URLs need the full sha
OVO_REAL_SHA256 = "dc4a90daf26764dc8ab8b228ea4af864ba2ea50c2833ead8c9af6573f78ccf97"
RAW = f"/{OVO}/{OVO_COMMIT}/data/ovo_bench_new.json"
OVO_JSON = json.dumps([{"id": n, "task": "EPM", "video": f"{n}.mp4"} for n in range(3)]).encode()
OVO_SHA256 = hashlib.sha256(OVO_JSON).hexdigest()


def github_source(manifest):
    (source,) = [s for s in manifest.sources if isinstance(s, module.GithubFile)]
    return source


@pytest.fixture
def small_ovo_metadata(monkeypatch):
    manifest = module.MANIFESTS["ovo"]
    small = replace(github_source(manifest), size=len(OVO_JSON), records=3, sha256=None)
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
    assert (source.repo, source.commit, source.pattern) == (OVO, OVO_COMMIT, "data/ovo_bench_new.json")
    assert (source.size, source.records, source.sha256) == (918_443, 1640, OVO_REAL_SHA256)
    assert source.pattern.removeprefix(source.strip) == "ovo_bench_new.json" and not source.videos


def test_real_ovo_pin_refuses_other_content_of_the_right_size(fake_hub, tmp_path):
    # The manifest as shipped: fetched from the full-sha URL, and 918,443 bytes are not enough.
    fake_hub.add_repo(OVO, {"src_videos.tar.partaa": b""})
    fake = json.dumps([{"id": n} for n in range(1640)]).encode()
    fake_hub.raw[RAW] = fake.ljust(918_443)
    result = download(fake_hub, tmp_path, "ovo", "--no-videos")
    assert result.exit_code == 1
    sha = hashlib.sha256(fake.ljust(918_443)).hexdigest()
    (line,) = messages(result)
    assert f"{RAW} is not the expected file: sha256 {sha}, not {OVO_REAL_SHA256}" in line
    assert f"(commit {OVO_COMMIT}, 918,443 bytes)" in line and fake_hub.gets[RAW] == 1
    assert_nothing_left(tmp_path / "ovo")


def pin(monkeypatch, source, sha256):
    """Make the OVO-Bench manifest expect ``sha256`` of its GitHub file."""
    manifest = module.MANIFESTS["ovo"]
    pinned = replace(source, sha256=sha256)
    sources = tuple(pinned if isinstance(s, module.GithubFile) else s for s in manifest.sources)
    monkeypatch.setitem(module.MANIFESTS, "ovo", replace(manifest, sources=sources))


def test_a_file_accepted_before_the_pin_is_checked_again(ovo_hub, tmp_path, monkeypatch, small_ovo_metadata):
    assert download(ovo_hub, tmp_path, "ovo", "--no-videos").exit_code == 0  # no pin: size and records
    pin(monkeypatch, small_ovo_metadata, "0" * 64)  # a later stc pins another file
    again = download(ovo_hub, tmp_path, "ovo", "--no-videos")
    assert again.exit_code == 1 and "nothing to do" not in again.stdout
    target = tmp_path / "ovo" / "ovo_bench_new.json"
    assert f"{target} is not the expected file: sha256 {OVO_SHA256}, not {'0' * 64}" in again.stderr
    pin(monkeypatch, small_ovo_metadata, OVO_SHA256)  # the pin it matches: complete, nothing fetched
    right = download(ovo_hub, tmp_path, "ovo", "--no-videos")
    assert right.exit_code == 0 and "nothing to do" in right.stdout and ovo_hub.gets[RAW] == 1


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
        f"place data/ovo_bench_new.json of the GitHub repository {OVO} (commit {OVO_COMMIT}, "
        f"{len(OVO_JSON):,} bytes) at {target} by hand" in result.stderr
    )
    assert_nothing_left(tmp_path / "ovo")
    assert not any(ovo_hub.gets[p] for p in ovo_hub.gets if p.startswith("src_videos"))  # metadata first


def test_ovo_metadata_sha256_is_checked_once_pinned(ovo_hub, tmp_path, monkeypatch, small_ovo_metadata):
    pin(monkeypatch, small_ovo_metadata, "0" * 64)
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


# Datasets that moved: lmms-lab/egoschema and lmms-lab/Video-MME are lmms-eval/... since 2026.
EGO_FILES = {"Subset/test-00000-of-00001.parquet": b"subset", "MC/test-00000-of-00001.parquet": b"mc"}


def test_moved_dataset_is_fetched_under_its_new_name(fake_hub, tmp_path):
    fake_hub.add_repo("lmms-eval/egoschema", EGO_FILES)
    fake_hub.add_repo("lmms-lab/egoschema", EGO_FILES)  # the old name still answers: not asked
    result = download(fake_hub, tmp_path, "egoschema", "--no-videos")
    assert result.exit_code == 0, result.output
    assert "egoschema: lmms-eval/egoschema@" in result.stdout and "old name" not in result.stdout
    assert not any("lmms-lab" in request for request in fake_hub.requests)
    marker = json.loads((tmp_path / "egoschema/.stc-download/complete.json").read_text())
    assert marker["repo"] == "lmms-eval/egoschema"
    assert (tmp_path / "egoschema/MC/test-00000-of-00001.parquet").read_bytes() == b"mc"


def test_moved_dataset_falls_back_to_its_old_name_and_says_so(fake_hub, tmp_path):
    fake_hub.add_repo("lmms-lab/egoschema", EGO_FILES)
    result = download(fake_hub, tmp_path, "egoschema", "--no-videos")
    assert result.exit_code == 0, result.output
    assert "egoschema: note: lmms-eval/egoschema not found; using its old name lmms-lab/egoschema" in (
        result.stdout
    )
    assert "egoschema: lmms-lab/egoschema@" in result.stdout
    marker = json.loads((tmp_path / "egoschema/.stc-download/complete.json").read_text())
    assert marker["repo"] == "lmms-lab/egoschema"


def test_moved_dataset_under_neither_name_names_both(fake_hub, tmp_path):
    result = download(fake_hub, tmp_path, "videomme")
    assert result.exit_code == 1
    (line,) = messages(result)
    assert f"No dataset repo lmms-eval/Video-MME or lmms-lab/Video-MME on {fake_hub.url}" in line


# MLVU/MVLU is gated: the hub lists it to anyone but serves its files only after its terms are accepted.
MLVU_FILES = {"MLVU/json/1_plotQA.json": b"[]", "MLVU/video/1_plotQA/a.mp4": b"video"}


def test_gated_mlvu_dry_run_says_what_to_do_before_any_transfer(fake_hub, tmp_path):
    fake_hub.add_repo("MLVU/MVLU", MLVU_FILES, gated="files")
    result = download(fake_hub, tmp_path, "mlvu", "--dry-run")
    assert result.exit_code == 0, result.output
    first, summary, *_ = result.stdout.splitlines()
    assert first.startswith(
        f"mlvu: note: Dataset MLVU/MVLU is gated: accept its terms at {fake_hub.url}/datasets/MLVU/MVLU "
        "while logged in, then pass --token, set HF_TOKEN or run `hf auth login`"
    )
    assert "`huggingface-cli login`" in first and summary.startswith("mlvu: MLVU/MVLU@")
    assert not any(fake_hub.gets.values())


@pytest.mark.parametrize(
    ("token", "why"), [(None, "no token was given"), ("hf_other_account", "the token given does not grant")]
)
def test_gated_mlvu_refusal_is_one_line_saying_what_to_do(fake_hub, tmp_path, token, why):
    fake_hub.add_repo("MLVU/MVLU", MLVU_FILES, gated="files")  # 401 without a token, 403 with another
    result = download(fake_hub, tmp_path, "mlvu", *(["--token", token] if token else []))
    assert result.exit_code == 1
    (line,) = messages(result)
    assert line.startswith(f"error: Dataset MLVU/MVLU is gated and {why}")
    assert f"accept its terms at {fake_hub.url}/datasets/MLVU/MVLU" in line and "HF_TOKEN" in line
    assert not (tmp_path / "mlvu/.stc-download/complete.json").exists()
    granted = download(fake_hub, tmp_path, "mlvu", "--token", fake_hub.token)
    assert granted.exit_code == 0, granted.output
    assert listing(tmp_path / "mlvu") == ["json/1_plotQA.json", "video/1_plotQA/a.mp4"]


def test_archive_without_the_expected_files_is_not_marked_complete(fake_hub, tmp_path):
    members = {f"Real-Time Visual Understanding_1-50/clips/{n}.mp4": b"x" for n in range(5)}
    zip_name = "Real-Time Visual Understanding_1-50.zip"
    csv = {"StreamingBench/Real_Time_Visual_Understanding.csv": CSV.encode()}
    fake_hub.add_repo(SB, {**csv, zip_name: zip_of(members)})
    result = download(fake_hub, tmp_path, "streamingbench")
    assert result.exit_code == 1
    (line,) = messages(result)
    first = ", ".join(f"'Real-Time Visual Understanding_1-50/clips/{n}.mp4'" for n in range(3))
    assert f"{zip_name}: holds 5 files (first: {first}), none of them where the layout expects one" in line
    assert "pass --revision" in line
    folder = tmp_path / "streamingbench"
    assert not (folder / ".stc-download/complete.json").exists()
    assert not (folder / ".stc-download/done/Real-Time_Visual_Understanding_1-50.zip").exists()
    assert not (folder / "videos").exists()
    # Intact, so kept: running again reports the same without fetching it again.
    again = download(fake_hub, tmp_path, "streamingbench")
    assert again.exit_code == 1 and "holds 5 files" in again.stderr and fake_hub.gets[zip_name] == 1


def unwritable_folder(tmp_path):
    """A folder no file can be created in: read-only permissions, or for root (who ignores them) /sys."""
    import os
    import tempfile

    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o555)
        return folder
    for candidate in ("/sys", "/proc"):
        try:
            tempfile.TemporaryFile(dir=candidate).close()
        except OSError:
            return Path(candidate)
    pytest.skip("running as root with no folder that refuses writes")


@pytest.mark.parametrize("bench", ["demo", "streamingbench"])
@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_data_dir_that_is_a_file_or_unwritable_is_one_error_line(sb_hub, tmp_path, bench, kind):
    if kind == "file":
        data_dir = tmp_path / "data"
        data_dir.write_text("a file")
        at_fault = f"--data-dir {data_dir}: {data_dir} is a file, not a folder"
    else:
        data_dir = unwritable_folder(tmp_path) / "stc"
        at_fault = f"--data-dir {data_dir}: cannot write into {data_dir.parent} ("
    for dry in ([], ["--dry-run"]):
        result = download(sb_hub, data_dir, bench, *dry)
        assert result.exit_code == 2, result.output
        (line,) = messages(result)
        assert line.startswith(f"error: {at_fault}") and "Traceback" not in result.output
    assert not any(sb_hub.gets.values())


def test_demo_download_again_is_a_no_op_that_rewrites_nothing(tmp_path):
    first = runner.invoke(app, ["download", "demo", "--data-dir", str(tmp_path)])
    assert first.exit_code == 0 and "copied from the stc package" in first.stdout
    folder = tmp_path / "demo"
    files = [p for p in folder.rglob("*") if p.is_file()]

    def stats():
        return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}

    before = stats()
    again = runner.invoke(app, ["download", "demo", "--data-dir", str(tmp_path)])
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == f"demo: already there in {folder}, unchanged; nothing to do"
    assert stats() == before
    # An edited file is put back; the others are left alone.
    (folder / "demo.json").write_text("[]")
    before = stats()
    fixed = runner.invoke(app, ["download", "demo", "--data-dir", str(tmp_path)])
    assert fixed.exit_code == 0 and "copied from the stc package" in fixed.stdout
    from stc_cli.benchmarks import demo

    assert (folder / "demo.json").read_bytes() == (demo.PACKAGED / "demo.json").read_bytes()
    assert {p: s for p, s in stats().items() if p.name != "demo.json"} == {
        p: s for p, s in before.items() if p.name != "demo.json"
    }
