"""Safe, atomic extraction of downloaded benchmark archives (zips and split tars).

Every member is checked before it is written, everything is written to a staging folder next to
`dest`, and files move into `dest` only once the whole archive has been read without error. A
failure leaves `dest` as it was, so a half-extracted archive never looks complete; callers still
write their own completeness marker after these functions return.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

Rename = Callable[[str], str | None]

# What a broken download raises while being read: bad headers, CRC mismatches, short data.
_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError)
_JUNK = ("__MACOSX", ".DS_Store")
_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive is corrupt, truncated or unsafe; the message names it and says what to do."""


class NothingExpectedError(ArchiveError):
    """An intact archive none of whose files the rename keeps: not corrupt, so not to be deleted."""


def _nothing_expected(label: str, names: list[str]) -> NothingExpectedError:
    # Name what it held, so that a changed dataset layout can be told from an empty or wrong file.
    if not names:
        return NothingExpectedError(f"{label}: holds no files; nothing was extracted")
    shown = ", ".join(repr(name) for name in names[:3])
    return NothingExpectedError(
        f"{label}: holds {len(names)} files (first: {shown}), none of them where the layout expects one; "
        "nothing was extracted"
    )


def _fail(label: str, problem: str) -> ArchiveError:
    return ArchiveError(
        f"{label}: {problem}. The file is corrupt or unsafe, and nothing from it was extracted; "
        "if it is a corrupt or incomplete download, delete it and download it again."
    )


def _target(label: str, name: str, rename: Rename | None) -> str | None:
    """The checked path of member `name` relative to dest, or None when it is to be skipped. The
    member's own name is checked too: a rename must not launder an absolute or ``..`` path."""
    if any(part in _JUNK for part in PurePosixPath(name.replace("\\", "/")).parts):
        return None
    _check_path(label, name, name)
    mapped = rename(name) if rename is not None else name
    return None if mapped is None else _check_path(label, name, mapped)


def _check_path(label: str, name: str, path: str) -> str:
    """``path`` normalised, or ArchiveError when it is absolute, has a drive or a ``..``, or is empty."""
    # Backslashes are separators on Windows, so check them as such wherever we run.
    unix = path.replace("\\", "/")
    parts = [part for part in unix.split("/") if part not in ("", ".")]
    if unix.startswith("/") or PureWindowsPath(path).drive or ".." in parts or not parts:
        where = f" (renamed to {path!r})" if path != name else ""
        raise _fail(label, f"member {name!r}{where} would be written outside the destination")
    return "/".join(parts)


def _claim(label: str, rel: str, files: set[str], dirs: set[str]) -> None:
    """Refuse a second member with the same target, or a file where another needs a folder."""
    parents = {str(parent) for parent in PurePosixPath(rel).parents if str(parent) != "."}
    if rel in files:
        raise _fail(label, f"two members would be written to {rel!r}")
    if rel in dirs or parents & files:
        raise _fail(label, f"one member's file is another's folder at {rel!r}")
    files.add(rel)
    dirs.update(parents)


def _write(source, staging: Path, rel: str) -> None:
    path = staging / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        shutil.copyfileobj(source, out, _CHUNK)


def _staged(label: str, key: str, dest: Path, extract: Callable[[Path], Iterable[str]]) -> list[str]:
    """Run `extract` into a fresh staging folder, then move its files into `dest` or roll back."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A fixed name per archive, so a run killed midway leaves one folder that the next run clears.
    staging = dest.parent / f"{dest.name}.partial-{key}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        try:
            written = sorted(extract(staging))
        except _CORRUPT as exc:
            raise _fail(label, f"could not be read ({type(exc).__name__}: {exc})") from exc
        # Check every target before moving any, so a clash cannot leave dest half updated.
        for rel in written:
            folders = [dest] + [dest / p for p in PurePosixPath(rel).parents if str(p) != "."]
            if (dest / rel).is_dir() or any(p.exists() and not p.is_dir() for p in folders):
                raise ArchiveError(
                    f"{label}: cannot write {rel!r} into {dest}: a folder is where the file goes, or a file "
                    "is where a folder goes; move it away and extract again"
                )
        for rel in written:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, target)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def extract_zip(archive: Path, dest: Path, rename: Rename | None = None) -> list[str]:
    """Extract a zip archive into `dest`, all or nothing.

    Folders, `__MACOSX/` entries and `.DS_Store` files are skipped. Every member is checked before
    anything is written.

    Args:
        archive: The zip file.
        dest: The folder to extract into; created if missing. Existing files at the same paths
            are replaced, other files are left alone.
        rename: Maps a member name to its path relative to `dest`, or to None to skip the member.
            Defaults to keeping the name.

    Returns:
        The paths written, relative to `dest`, sorted.

    Raises:
        ArchiveError: The archive is corrupt (bad zip, CRC error, truncated) or unsafe (a path
            leaving `dest`, a symbolic link, two members with the same target). `dest` is unchanged.
        NothingExpectedError: No member is kept (an empty archive, or `rename` skips them all).
    """
    archive = Path(archive)
    label = str(archive)

    def extract(staging: Path) -> list[str]:
        with zipfile.ZipFile(archive) as zf:
            plan, files, dirs, names = [], set(), set(), []
            for info in zf.infolist():
                # A link is refused even where it would be skipped: no honest dataset zip has one.
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise _fail(label, f"member {info.filename!r} is a symbolic link")
                if info.is_dir():
                    continue
                names.append(info.filename)
                rel = _target(label, info.filename, rename)
                if rel is None:
                    continue
                if info.flag_bits & 0x1:
                    raise _fail(label, f"member {info.filename!r} is encrypted")
                _claim(label, rel, files, dirs)
                plan.append((info, rel))
            if not plan:
                raise _nothing_expected(label, names)
            for info, rel in plan:
                with zf.open(info) as source:  # reading to the end checks the CRC
                    _write(source, staging, rel)
            return [rel for _, rel in plan]

    return _staged(label, archive.name, dest, extract)


class _JoinedParts:
    """Read-only stream over the parts of a split file, one after the other, never joined on disk."""

    def __init__(self, parts: list[Path]) -> None:
        self._parts, self._index, self._file = parts, 0, None

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while self._index < len(self._parts) and (size < 0 or len(out) < size):
            if self._file is None:
                self._file = open(self._parts[self._index], "rb")
            data = self._file.read(-1 if size < 0 else size - len(out))
            if data:
                out += data
            else:
                self.close()
                self._index += 1
        return bytes(out)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile stops silently at a missing, short or garbled header; only a zero block ends a tar."""

    @classmethod
    def fromtarfile(cls, tf):
        try:
            return super().fromtarfile(tf)
        except tarfile.EOFHeaderError:
            raise
        except tarfile.HeaderError as exc:
            raise tarfile.ReadError(f"truncated or damaged at byte {tf.offset}: {exc}") from None


def extract_tar_parts(parts: list[Path], dest: Path, rename: Rename | None = None) -> list[str]:
    """Extract a tar split into parts (`x.tar.partaa`, `x.tar.partab`, ...) into `dest`, all or nothing.

    The parts are read in sorted name order as one stream (plain or compressed), without joining
    them into a file. Folders, `__MACOSX/` entries and `.DS_Store` files are skipped.

    Args:
        parts: The part files, in any order; a single whole tar works too.
        dest: The folder to extract into; created if missing. Existing files at the same paths
            are replaced, other files are left alone.
        rename: Maps a member name to its path relative to `dest`, or to None to skip the member.
            Defaults to keeping the name.

    Returns:
        The paths written, relative to `dest`, sorted.

    Raises:
        ArchiveError: The stream is corrupt or truncated (a missing part included), or unsafe (a
            path leaving `dest`, a link, a device or FIFO, two members with the same target).
            `dest` is unchanged.
        NothingExpectedError: No member is kept (an empty archive, or `rename` skips them all).
    """
    ordered = sorted((Path(p) for p in parts), key=lambda p: p.name)
    if not ordered:
        raise ArchiveError("extract_tar_parts: no archive parts given")
    label = str(ordered[0]) + (f" (+{len(ordered) - 1} more parts)" if len(ordered) > 1 else "")

    def extract(staging: Path) -> list[str]:
        stream, written, files, dirs, names = _JoinedParts(ordered), [], set(), set(), []
        try:
            with tarfile.open(fileobj=stream, mode="r|*", tarinfo=_StrictTarInfo) as tf:
                for member in tf:
                    if member.isdir():
                        continue
                    if not member.isreg():  # refused even where it would be skipped, as in zips
                        kind = "link" if member.issym() or member.islnk() else "device, FIFO or special file"
                        raise _fail(label, f"member {member.name!r} is a {kind}")
                    names.append(member.name)
                    rel = _target(label, member.name, rename)
                    if rel is None:
                        continue
                    _claim(label, rel, files, dirs)
                    _write(tf.extractfile(member), staging, rel)
                    written.append(rel)
        finally:
            stream.close()
        if not written:
            raise _nothing_expected(label, names)
        return written

    return _staged(label, ordered[0].name, dest, extract)
