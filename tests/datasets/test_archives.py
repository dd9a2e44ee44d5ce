"""Archive extraction: renames, split tars, refused members, corrupt files, atomicity."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from stc_cli.datasets.archives import (
    ArchiveError,
    NothingExpectedError,
    _JoinedParts,
    extract_tar_parts,
    extract_zip,
)


def listing(root: Path) -> list[str]:
    """Every file and folder under root, relative, sorted; folders end with '/'."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        out += [f"{(rel / d).as_posix()}/" for d in dirnames]
        out += [(rel / f).as_posix() for f in filenames]
    return sorted(out)


def make_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                if member[0].endswith("/"):
                    info.type = tarfile.DIRTYPE
                tf.addfile(info, io.BytesIO(member[1]))
    data = buf.getvalue()
    return gzip.compress(data) if gz else data


def split(data: bytes, folder: Path, stem: str, n: int = 3) -> list[Path]:
    """Split like `split -b`: stem.partaa, stem.partab, ...; returned shuffled (ac, aa, ab)."""
    size = -(-len(data) // n)
    parts = []
    for i in range(n):
        part = folder / f"{stem}.parta{'abcdefgh'[i]}"
        part.write_bytes(data[i * size : (i + 1) * size])
        parts.append(part)
    return parts[2:] + parts[:2]


@pytest.fixture
def dl(tmp_path: Path) -> Path:
    folder = tmp_path / "dl"
    folder.mkdir()
    return folder


def strip_top(name: str) -> str | None:
    # "Real-Time Visual Understanding/sample_3/video.mp4" -> "videos/sample_3/video.mp4"
    top, _, rest = name.partition("/")
    return f"videos/{rest}" if rest.startswith("sample_") and rest.endswith("/video.mp4") else None


def test_streamingbench_like_zip(tmp_path, dl):
    top = "Real-Time Visual Understanding"
    archive = make_zip(
        dl / f"{top}_1-50.zip",
        {
            f"{top}/": b"",
            f"{top}/sample_1/": b"",
            f"{top}/sample_1/video.mp4": b"one",
            f"{top}/sample_12/video.mp4": b"twelve",
            f"{top}/.DS_Store": b"junk",
            f"{top}/notes.txt": b"skipped by rename",
            f"__MACOSX/{top}/sample_1/._video.mp4": b"junk",
        },
        compression=zipfile.ZIP_DEFLATED,
    )
    dest = tmp_path / "data" / "streamingbench"
    written = extract_zip(archive, dest, rename=strip_top)
    assert written == ["videos/sample_1/video.mp4", "videos/sample_12/video.mp4"]
    assert (dest / "videos/sample_1/video.mp4").read_bytes() == b"one"
    assert (dest / "videos/sample_12/video.mp4").read_bytes() == b"twelve"
    assert listing(tmp_path / "data") == [
        "streamingbench/",
        "streamingbench/videos/",
        "streamingbench/videos/sample_1/",
        "streamingbench/videos/sample_1/video.mp4",
        "streamingbench/videos/sample_12/",
        "streamingbench/videos/sample_12/video.mp4",
    ]


def test_zip_default_keeps_names(tmp_path, dl):
    archive = make_zip(
        dl / "videos_chunked_01.zip", {"a.mp4": b"A", "sub/b.mp4": b"B", "__MACOSX/._a.mp4": b""}
    )
    assert extract_zip(archive, tmp_path / "out") == ["a.mp4", "sub/b.mp4"]
    assert listing(tmp_path / "out") == ["a.mp4", "sub/", "sub/b.mp4"]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_split_tar_parts_in_sorted_order(tmp_path, dl, gz):
    payload = bytes(range(256)) * 40  # spans several parts
    data = tar_bytes(
        [
            ("src_videos/", b""),
            ("src_videos/a.mp4", payload),
            ("src_videos/b.mp4", b"bee"),
            ("x/.DS_Store", b""),
        ],
        gz=gz,
    )
    parts = split(data, dl, "src_videos.tar")
    assert [p.name for p in parts] == [
        "src_videos.tar.partac",
        "src_videos.tar.partaa",
        "src_videos.tar.partab",
    ]
    before = listing(tmp_path)
    dest = tmp_path / "ovo"
    assert extract_tar_parts(parts, dest) == ["src_videos/a.mp4", "src_videos/b.mp4"]
    assert (dest / "src_videos/a.mp4").read_bytes() == payload
    assert (dest / "src_videos/b.mp4").read_bytes() == b"bee"
    # No joined tar anywhere: the only new paths are the extracted members.
    assert sorted(set(listing(tmp_path)) - set(before)) == [
        "ovo/",
        "ovo/src_videos/",
        "ovo/src_videos/a.mp4",
        "ovo/src_videos/b.mp4",
    ]


def test_joined_parts_reads_across_boundaries(dl):
    parts = [dl / "p.partaa", dl / "p.partab", dl / "p.partac"]
    for part, data in zip(parts, [b"abc", b"", b"defgh"], strict=True):
        part.write_bytes(data)
    stream = _JoinedParts(parts)
    assert [stream.read(2), stream.read(4), stream.read(10), stream.read(1)] == [b"ab", b"cdef", b"gh", b""]
    assert _JoinedParts(parts).read() == b"abcdefgh"


def assert_clean(tmp_path: Path) -> None:
    # dest keeps only what it had; no staging folder next to it.
    assert listing(tmp_path / "data") == ["keep.txt"]
    assert sorted(os.listdir(tmp_path)) == ["data", "dl"]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "keep.txt").write_text("old")
    return dest


@pytest.mark.parametrize(
    ("names", "rename", "bad"),
    [
        (["ok.mp4", "../evil"], None, "'../evil'"),
        (["ok.mp4", "/abs/evil"], None, "'/abs/evil'"),
        (["ok.mp4", "a/../../evil"], None, "'a/../../evil'"),
        (["ok.mp4", "C:/evil"], None, "'C:/evil'"),
        (["ok.mp4", "..\\evil"], None, "'..\\\\evil'"),
        (["ok.mp4"], lambda name: "../x", "renamed to '../x'"),
    ],
)
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_traversal_refused(tmp_path, dl, data, names, rename, bad, kind):
    members = {name: b"x" for name in names}
    if kind == "zip":
        archive = make_zip(dl / "a.zip", members)
        with pytest.raises(ArchiveError, match="outside the destination") as err:
            extract_zip(archive, data, rename=rename)
    else:
        archive = dl / "a.tar"
        archive.write_bytes(tar_bytes(list(members.items())))
        with pytest.raises(ArchiveError, match="outside the destination") as err:
            extract_tar_parts([archive], data, rename=rename)
    assert str(archive) in str(err.value) and bad in str(err.value)
    assert_clean(tmp_path)


def link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    ("member", "what"),
    [
        (link("v/link.mp4", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
        (link("v/hard.mp4", tarfile.LNKTYPE, "v/a.mp4"), "is a link"),
        (link("v/fifo", tarfile.FIFOTYPE, ""), "is a device, FIFO"),
        (link("v/dev", tarfile.CHRTYPE, ""), "is a device, FIFO"),
    ],
    ids=["symlink", "hardlink", "fifo", "chardev"],
)
def test_tar_links_and_devices_refused(tmp_path, dl, data, member, what):
    parts = split(tar_bytes([("v/a.mp4", b"a" * 2000), member, ("v/z.mp4", b"z")]), dl, "t.tar")
    with pytest.raises(ArchiveError, match=what) as err:
        extract_tar_parts(parts, data)
    assert "t.tar.partaa (+2 more parts)" in str(err.value)
    assert_clean(tmp_path)


def test_link_refused_even_where_rename_skips_it(tmp_path, dl, data):
    tar = dl / "l.tar"
    tar.write_bytes(tar_bytes([("A/sample_1/video.mp4", b"1"), link("A/notes.txt", tarfile.SYMTYPE, "/etc")]))
    with pytest.raises(ArchiveError, match="'A/notes.txt' is a link"):
        extract_tar_parts([tar], data, rename=strip_top)
    assert_clean(tmp_path)


def test_zip_symlink_refused(tmp_path, dl, data):
    archive = dl / "s.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.mp4", b"ok")
        info = zipfile.ZipInfo("evil.mp4")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match=r"'evil.mp4' is a symbolic link"):
        extract_zip(archive, data)
    assert_clean(tmp_path)


def corrupt_zips(dl: Path) -> dict[str, Path]:
    good = make_zip(dl / "good.zip", {"a.mp4": b"A" * 1000, "b.mp4": b"0123456789" * 100}).read_bytes()
    random = dl / "random.zip"
    random.write_bytes(os.urandom(3000))
    truncated = dl / "truncated.zip"
    truncated.write_bytes(good[: len(good) // 2])
    at = good.index(b"0123456789") + 50  # inside b.mp4's stored data
    flipped = dl / "flipped.zip"
    flipped.write_bytes(good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1 :])
    (dl / "good.zip").unlink()
    return {"random": random, "truncated": truncated, "flipped": flipped}


@pytest.mark.parametrize("which", ["random", "truncated", "flipped"])
def test_corrupt_zip(tmp_path, dl, data, which):
    archive = corrupt_zips(dl)[which]
    with pytest.raises(ArchiveError, match="could not be read") as err:
        extract_zip(archive, data)
    message = str(err.value)
    assert str(archive) in message and "corrupt" in message and "download it again" in message
    if which == "flipped":
        assert "CRC" in message
    assert listing(data) == ["keep.txt"]
    assert sorted(os.listdir(tmp_path)) == ["data", "dl"]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("cut", ["mid_member", "member_boundary", "garbled_header", "missing_last_part"])
def test_truncated_tar(tmp_path, dl, data, gz, cut):
    raw = tar_bytes([("a.mp4", b"a" * 3000), ("b.mp4", b"b" * 3000)])
    if cut == "mid_member":
        raw = raw[:2000]
    elif cut == "member_boundary":
        raw = raw[: 512 + 3072]  # a.mp4's header and padded data, then nothing
    elif cut == "garbled_header":
        raw = raw[: 512 + 3072] + b"\x07" * 512 + raw[512 + 3072 + 512 :]
    stream = gzip.compress(raw) if gz else raw
    parts = split(stream, dl, "t.tar")
    if cut == "missing_last_part":
        parts = [p for p in parts if not p.name.endswith("ac")]
    with pytest.raises(ArchiveError, match="could not be read") as err:
        extract_tar_parts(parts, data)
    assert "t.tar.partaa" in str(err.value) and "download it again" in str(err.value)
    assert listing(data) == ["keep.txt"]
    assert sorted(os.listdir(tmp_path)) == ["data", "dl"]


def test_not_a_tar(tmp_path, dl, data):
    junk = dl / "junk.tar"
    junk.write_bytes(os.urandom(5000))
    with pytest.raises(ArchiveError, match="junk.tar: could not be read"):
        extract_tar_parts([junk], data)
    assert_clean(tmp_path)


def test_rerun_replaces_files_and_leaves_no_staging(tmp_path, dl, data):
    archive = make_zip(dl / "v.zip", {"v/a.mp4": b"new a", "v/b.mp4": b"new b"})
    (data / "v").mkdir()
    (data / "v/a.mp4").write_bytes(b"old a")
    (data / "v/other.mp4").write_bytes(b"other")
    # A staging folder left behind by a run that was killed midway.
    (tmp_path / "data.partial-v.zip").mkdir()
    (tmp_path / "data.partial-v.zip/v").mkdir()
    (tmp_path / "data.partial-v.zip/v/half.mp4").write_bytes(b"half")
    for _ in range(2):
        assert extract_zip(archive, data) == ["v/a.mp4", "v/b.mp4"]
        assert listing(data) == ["keep.txt", "v/", "v/a.mp4", "v/b.mp4", "v/other.mp4"]
        assert [(data / f"v/{n}.mp4").read_bytes() for n in ("a", "b", "other")] == [
            b"new a",
            b"new b",
            b"other",
        ]
        assert sorted(os.listdir(tmp_path)) == ["data", "dl"]
    parts = split(tar_bytes([("v/a.mp4", b"tar a"), ("v/c.mp4", b"tar c")]), dl, "t.tar")
    assert extract_tar_parts(parts, data) == ["v/a.mp4", "v/c.mp4"]
    assert (data / "v/a.mp4").read_bytes() == b"tar a"
    assert sorted(os.listdir(tmp_path)) == ["data", "dl"]


def test_duplicate_targets_refused(tmp_path, dl, data):
    members = {"A/sample_1/video.mp4": b"1", "B/sample_1/video.mp4": b"2"}
    archive = make_zip(dl / "d.zip", members)
    with pytest.raises(ArchiveError, match="'videos/sample_1/video.mp4'"):
        extract_zip(archive, data, rename=strip_top)
    tar = dl / "d.tar"
    tar.write_bytes(tar_bytes(list(members.items())))
    with pytest.raises(ArchiveError, match="two members would be written to 'videos/sample_1/video.mp4'"):
        extract_tar_parts([tar], data, rename=strip_top)
    assert_clean(tmp_path)


def test_file_and_folder_clash_refused(tmp_path, dl, data):
    archive = make_zip(dl / "c.zip", {"x": b"file", "x/y.mp4": b"under x"})
    with pytest.raises(ArchiveError, match="one member's file is another's folder at 'x/y.mp4'"):
        extract_zip(archive, data)
    (data / "keep.txt").write_text("old")
    blocked = make_zip(dl / "k.zip", {"keep.txt/a.mp4": b"a"})
    with pytest.raises(ArchiveError, match="move it away"):
        extract_zip(blocked, data)
    assert listing(data) == ["keep.txt"]
    assert sorted(os.listdir(tmp_path)) == ["data", "dl"]


def test_missing_dest_not_created_on_failure(tmp_path, dl):
    archive = make_zip(dl / "e.zip", {"../evil": b"x"})
    with pytest.raises(ArchiveError):
        extract_zip(archive, tmp_path / "new")
    assert sorted(os.listdir(tmp_path)) == ["dl"]


def test_zip_with_nothing_the_layout_expects_says_what_it_held(tmp_path, dl, data):
    names = [f"top/clips/{n}.mp4" for n in range(7)]
    archive = make_zip(dl / "v.zip", {name: b"x" for name in names})
    with pytest.raises(NothingExpectedError) as err:
        extract_zip(archive, data, strip_top)  # keeps only <top>/sample_*/video.mp4
    shown = ", ".join(repr(name) for name in names[:3])
    assert str(err.value) == (
        f"{archive}: holds 7 files (first: {shown}), none of them where the layout expects one; "
        "nothing was extracted"
    )
    assert_clean(tmp_path)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_tar_with_nothing_the_layout_expects_says_what_it_held(tmp_path, dl, data, gz):
    # OVO-Bench's rename keeps what is under one top folder: files at the top are not in the layout.
    parts = split(tar_bytes([("a.mp4", b"a"), ("b.mp4", b"b")], gz=gz), dl, "src_videos.tar", n=2)
    with pytest.raises(
        NothingExpectedError, match=r"\(\+1 more parts\): holds 2 files \(first: 'a.mp4', 'b.mp4'\)"
    ):
        extract_tar_parts(parts, data, lambda name: name.partition("/")[2] or None)
    assert_clean(tmp_path)


def test_empty_archive_holds_no_files(tmp_path, dl, data):
    archive = make_zip(dl / "empty.zip", {"__MACOSX/": b"", "folder/": b""})
    with pytest.raises(NothingExpectedError, match="empty.zip: holds no files; nothing was extracted"):
        extract_zip(archive, data)
    assert_clean(tmp_path)
