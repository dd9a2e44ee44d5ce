"""`stc download`: benchmark data from the Hugging Face hub, in the layout ``stc check`` reads.

Each benchmark has a manifest: its dataset repository and the sources to fetch from it, each a glob over
the repository's files: metadata files copied to a path under the benchmark folder, zip archives, or the
parts of a split tar, unpacked through a ``rename`` that maps an archive member to its place in the
layout (or skips it). A file the hub lacks (OVO-Bench's metadata) is a :class:`GithubFile`, fetched from a
pinned commit of its GitHub repository and checked, or validated when the user placed it by hand.
A dataset that moved to another organisation is listed under its new name first, then its old ones
(the hub's redirect from an old name is not to be relied on). Per benchmark:

1. list the repository at the revision; match the sources; compare with the free disk space;
2. fetch and unpack one source at a time (split tar parts in sorted order, streamed into one tar reader,
   never joined); an unpacked source leaves a marker under ``.stc-download/done/``, so an interrupted run
   resumes where it stopped and a half-extracted archive is never taken for a complete one; archives are
   deleted once unpacked unless ``keep_archives``;
3. write ``.stc-download/complete.json`` (revision, files, sizes, the sha256 of GitHub files): running
   again is then a no-op.
"""

from __future__ import annotations

import contextlib
import filecmp
import fnmatch
import hashlib
import http.client
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stc_cli.datasets import archives, hub

STATE = ".stc-download"
GITHUB_URL = "https://raw.githubusercontent.com"  # serves <owner>/<repo>/<commit>/<path>
GITHUB_TIMEOUT = 60  # seconds without an answer before a GitHub fetch gives up


@dataclass(frozen=True)
class Source:
    """Files of a repository that become part of a benchmark folder.

    ``kind`` is ``file`` (copied to its repository path less the ``strip`` prefix), ``zip`` (each
    matching archive unpacked) or ``tar-parts`` (the matching parts are one split tar). ``rename``
    maps an archive member to its path under the benchmark folder, or None to skip it.
    """

    pattern: str
    kind: str = "file"
    videos: bool = False
    strip: str = ""
    rename: Callable[[str], str | None] | None = None
    choice: str | None = None  # OVO-Bench: which --ovo-videos value selects it


@dataclass(frozen=True)
class GithubFile(Source):
    """A JSON file published in GitHub repository ``repo`` at ``pattern`` (a path, not a glob), not on the
    hub: fetched from ``commit`` to its path less ``strip``, and accepted only when it has ``size`` bytes,
    is a JSON list of ``records`` objects and, once ``sha256`` is known, has that digest.
    """

    kind: str = "github"
    repo: str = ""
    commit: str = ""
    size: int = 0
    records: int = 0
    sha256: str | None = None


@dataclass(frozen=True)
class Manifest:
    bench: str
    repo_id: str
    sources: tuple[Source, ...]
    old_repo_ids: tuple[str, ...] = ()  # tried in turn when the hub does not know ``repo_id``
    gated: bool = False  # the hub serves its files only to accounts that accepted its terms


def _under(folder: str, pattern: str) -> Callable[[str], str | None]:
    """A rename keeping members whose file name matches ``pattern`` as ``folder/<file name>``."""
    regex = re.compile(pattern, re.IGNORECASE)

    def rename(member: str) -> str | None:
        name = member.rsplit("/", 1)[-1]
        return f"{folder}/{name}" if regex.fullmatch(name) else None

    return rename


def _streamingbench_video(member: str) -> str | None:
    # Zip members are `<folder>/sample_<N>/video.mp4`; the loader reads videos/sample_<N>/video.mp4.
    match = re.search(r"(?:^|/)(sample_\d+)/video\.mp4$", member)
    return f"videos/{match.group(1)}/video.mp4" if match else None


def _top_folder_as(folder: str) -> Callable[[str], str | None]:
    # OVO-Bench tars hold one top-level folder (whatever its name): it becomes ``folder``.
    def rename(member: str) -> str | None:
        parts = member.removeprefix("./").strip("/").split("/", 1)
        return f"{folder}/{parts[1]}" if len(parts) == 2 and parts[1] else None

    return rename


MANIFESTS = {
    "ovo": Manifest(
        "ovo",
        "JoeLeelyf/OVO-Bench",
        (
            GithubFile(
                "data/ovo_bench_new.json",
                strip="data/",
                repo="JoeLeelyf/OVO-Bench",
                # 2025-07-24; raw.githubusercontent.com is not known to accept a short sha
                commit="c34093f9a072d93f9e1c6b923446dfba71f4528e",
                size=918_443,
                records=1640,
                # unchanged since f3911d7
                sha256="dc4a90daf26764dc8ab8b228ea4af864ba2ea50c2833ead8c9af6573f78ccf97",
            ),
            Source(
                "src_videos.tar.parta*", "tar-parts", True, rename=_top_folder_as("src_videos"), choice="src"
            ),
            Source(
                "chunked_videos.tar.parta*",
                "tar-parts",
                True,
                rename=_top_folder_as("chunked_videos"),
                choice="chunked",
            ),
        ),
    ),
    "streamingbench": Manifest(
        "streamingbench",
        "mjuicem/StreamingBench",
        (
            Source("StreamingBench/Real_Time_Visual_Understanding.csv", strip="StreamingBench/"),
            Source("Real-Time Visual Understanding_*.zip", "zip", True, rename=_streamingbench_video),
        ),
    ),
    "mlvu": Manifest(
        "mlvu",
        "MLVU/MVLU",
        (
            Source("MLVU/json/[1-7]_*.json", strip="MLVU/"),
            Source("MLVU/video/[1-7]_*/*", videos=True, strip="MLVU/"),
        ),
        gated=True,
    ),
    "egoschema": Manifest(
        "egoschema",
        "lmms-eval/egoschema",
        (
            Source("Subset/test-00000-of-00001.parquet"),
            Source("MC/test-00000-of-00001.parquet"),
            Source("videos_chunked_*.zip", "zip", True, rename=_under("videos", r".+\.mp4")),
        ),
        old_repo_ids=("lmms-lab/egoschema",),  # moved to lmms-eval in 2026
    ),
    "videomme": Manifest(
        "videomme",
        "lmms-eval/Video-MME",
        (
            Source("videomme/test-00000-of-00001.parquet"),
            Source("subtitle.zip", "zip", rename=_under("subtitle", r".+\.srt")),
            Source("videos_chunked_*.zip", "zip", True, rename=_under("data", r".+\.(mp4|mkv)")),
        ),
        old_repo_ids=("lmms-lab/Video-MME",),  # moved to lmms-eval in 2026
    ),
}


class DownloadError(RuntimeError):
    """A download that cannot go on: one sentence saying what happened and what to do."""


class DataDirError(DownloadError):
    """The data directory given cannot hold the data (a file, or not writable): a user error."""


@dataclass(frozen=True)
class Item:
    """One unit of work: a file, a zip, or all the parts of a split tar (repository paths, sorted)."""

    source: Source
    paths: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def size(self) -> int:
        return sum(self.sizes)

    @property
    def key(self) -> str:
        """The name of its done marker."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.paths[0])


@dataclass
class Plan:
    """What a benchmark needs from its repository at one revision, and what is already done."""

    bench: str
    repo_id: str
    revision: str
    folder: Path
    items: list[Item]
    done: set[str] = field(default_factory=set)
    note: str = ""

    @property
    def pending(self) -> list[Item]:
        return [item for item in self.items if item.key not in self.done]

    @property
    def files(self) -> dict[str, int]:
        return {path: size for item in self.items for path, size in zip(item.paths, item.sizes, strict=True)}

    @property
    def complete(self) -> bool:
        marker = _read_json(self.folder / STATE / "complete.json")
        return (
            marker.get("revision") == self.revision
            and marker.get("files") == self.files
            and all(_pinned_sha_ok(item, marker.get("sha256") or {}) for item in self.items)
        )

    @property
    def needed_bytes(self) -> int:
        """Room for every pending transfer plus the unpacked copy of the largest archive."""
        pending = self.pending
        largest = max((item.size for item in pending if item.source.kind != "file"), default=0)
        return sum(item.size for item in pending) + largest

    def summary(self) -> str:
        """One line: what is left to fetch, its size, and the room it needs and has."""
        pending = self.pending
        return (
            f"{self.bench}: {self.repo_id}@{self.revision[:8]}: {len(pending)} of {len(self.items)} items to "
            f"fetch, {sum(i.size for i in pending) / 1e9:.2f} GB; needs {self.needed_bytes / 1e9:.2f} GB "
            f"free, {free_bytes(self.folder) / 1e9:.2f} GB free under {self.folder}"
        )


def plan(
    bench: str,
    data_dir: Path,
    *,
    videos: bool = True,
    ovo_videos: str = "src",
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> Plan:
    """List ``bench``'s repository and work out what to fetch. Raises HubError, DownloadError."""
    if bench not in MANIFESTS:
        known = ", ".join([*MANIFESTS, "demo"])
        raise DownloadError(f"unknown benchmark {bench!r}; stc download knows: {known}")
    if ovo_videos not in ("src", "chunked", "both"):
        raise DownloadError(f"--ovo-videos must be src, chunked or both, got {ovo_videos!r}")
    manifest = MANIFESTS[bench]
    repo_id, sha, sizes, note = _list(manifest, revision=revision, token=token, endpoint=endpoint)
    items = []
    for source in manifest.sources:
        if (source.videos and not videos) or (source.choice and ovo_videos not in (source.choice, "both")):
            continue
        if isinstance(source, GithubFile):
            items.append(Item(source, (source.pattern,), (source.size,)))
            continue
        matched = sorted(path for path in sizes if fnmatch.fnmatchcase(path, source.pattern))
        if not matched:
            raise DownloadError(
                f"{repo_id}@{sha[:8]} has no file matching {source.pattern!r}; "
                "the repository changed: pass --revision to pin the one stc knows, or report it"
            )
        groups = [matched] if source.kind == "tar-parts" else [[path] for path in matched]
        items += [Item(source, tuple(g), tuple(sizes[p] for p in g)) for g in groups]
    folder = Path(data_dir) / manifest.bench
    # An item is done when its marker records the same files with the same sizes (a new revision
    # that changed an archive makes it pending again) and, for a pinned GitHub file, the same sha256
    # (a file accepted before the pin is checked again).
    markers = {item.key: _read_json(folder / STATE / "done" / item.key) for item in items}
    done = {
        item.key
        for item in items
        if [markers[item.key].get(k) for k in ("paths", "sizes")] == [list(item.paths), list(item.sizes)]
        and _pinned_sha_ok(item, {item.paths[0]: markers[item.key].get("sha256")})
    }
    return Plan(bench, repo_id, sha, folder, items, done, note)


def _pinned_sha_ok(item: Item, recorded: dict) -> bool:
    """Whether ``recorded`` ({path: sha256}) holds ``item``'s pinned sha256, if it has one."""
    pin = getattr(item.source, "sha256", None)
    return pin is None or recorded.get(item.paths[0]) == pin


def _list(manifest: Manifest, **hub_options) -> tuple[str, str, dict[str, int], str]:
    """The name ``manifest``'s repository answers to (its current one, else an old one), its commit, its
    files, and a note when an old name was used. Raises HubError."""
    names = [manifest.repo_id, *manifest.old_repo_ids]
    for repo_id in names:
        try:
            sha, sizes = hub.list_files(repo_id, **hub_options)
        except hub.RepoNotFoundError:
            continue
        note = f"{names[0]} not found; using its old name {repo_id}" if repo_id != names[0] else ""
        return repo_id, sha, sizes, note
    raise hub.RepoNotFoundError(hub.not_found_message(names, hub_options.get("endpoint")))


def gated_note(bench: str, endpoint: str | None = None) -> str:
    """What to do before fetching ``bench``, when its repository is gated; else ""."""
    manifest = MANIFESTS.get(bench)
    return hub.gated_message(manifest.repo_id, endpoint) if manifest and manifest.gated else ""


def check_writable(folder: Path, given: str) -> None:
    """Refuse, before any transfer, a ``folder`` that cannot be created or written: its nearest existing
    ancestor must be a folder that takes a new file (tried: permission bits miss root and read-only
    mounts). ``given`` names the setting at fault, e.g. ``--data-dir PATH``. Raises DataDirError."""
    existing = _existing(folder)
    if not existing.is_dir():
        raise DataDirError(
            f"{given}: {existing} is a file, not a folder; pass a folder, or a path not yet there"
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise DataDirError(
            f"{given}: cannot write into {existing} ({error.strerror or error}); "
            "pass a folder you can write to"
        ) from error


def _demo_files() -> list[Path]:
    """The demo's files shipped in the package, relative to its folder."""
    from stc_cli.benchmarks import demo

    return sorted(p.relative_to(demo.PACKAGED) for p in demo.PACKAGED.rglob("*") if p.is_file())


def demo_changes(data_dir: Path) -> list[Path]:
    """The demo's files (relative paths) that ``<data_dir>/demo`` lacks or holds with other content."""
    from stc_cli.benchmarks import demo

    folder = Path(data_dir) / demo.FOLDER
    return [
        p
        for p in _demo_files()
        if not (folder / p).is_file() or not filecmp.cmp(demo.PACKAGED / p, folder / p, False)
    ]


def install_demo(data_dir: Path) -> Path:
    """Copy the demo benchmark shipped in the package into ``<data_dir>/demo``; no network needed. Files
    already there and unchanged are left as they are (not rewritten: their times stay)."""
    from stc_cli.benchmarks import demo

    folder = Path(data_dir) / demo.FOLDER
    for relative in demo_changes(data_dir):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo.PACKAGED / relative, folder / relative)
    sizes = {str(p): (demo.PACKAGED / p).stat().st_size for p in _demo_files()}
    marker = {"repo": "stc package", "files": sizes}
    if _read_json(folder / STATE / "complete.json") != marker:
        (folder / STATE).mkdir(exist_ok=True)
        (folder / STATE / "complete.json").write_text(json.dumps(marker, indent=1))
    return folder


def free_bytes(folder: Path) -> int:
    """Free space on the disk that holds ``folder`` (or its nearest existing parent)."""
    return shutil.disk_usage(_existing(folder)).free


def _existing(folder: Path) -> Path:
    """``folder`` or its nearest existing ancestor."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def fetch(
    plan: Plan,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    keep_archives: bool = False,
    github_url: str | None = None,
    progress: Callable[[str], None] = lambda _message: None,
) -> None:
    """Fetch and unpack every pending item of ``plan``, one at a time, then mark it complete.

    ``github_url`` replaces :data:`GITHUB_URL` (a mirror, a test server). ``complete.json`` records the
    sha256 of each GitHub file. Raises DownloadError (no room, a GitHub file that cannot be fetched or is
    not the expected one), HubError (the transfer), ArchiveError (a corrupt or unsafe archive, deleted so
    that running again fetches it afresh).
    """
    if plan.complete:
        return
    free = free_bytes(plan.folder)
    if plan.needed_bytes > free:
        raise DownloadError(
            f"{plan.bench} needs about {plan.needed_bytes / 1e9:.1f} GB free under {plan.folder} but the "
            f"disk has {free / 1e9:.1f} GB: free some space or pass --data-dir on a larger disk"
        )
    staging = plan.folder / STATE / "files"
    (plan.folder / STATE / "done").mkdir(parents=True, exist_ok=True)
    for number, item in enumerate(plan.pending, start=1):
        progress(f"{plan.bench}: {number}/{len(plan.pending)} {item.paths[0]} ({item.size / 1e6:.1f} MB)")
        marker = {"paths": list(item.paths), "sizes": list(item.sizes)}
        if isinstance(item.source, GithubFile):
            marker["sha256"] = _github_file(item.source, plan.folder, staging, github_url)
            (plan.folder / STATE / "done" / item.key).write_text(json.dumps(marker))
            continue
        local = [
            hub.download_file(
                plan.repo_id, path, staging, revision=plan.revision, token=token, endpoint=endpoint
            )
            for path in item.paths
        ]
        _unpack(item, local, plan.folder)
        (plan.folder / STATE / "done" / item.key).write_text(json.dumps(marker))
        if item.source.kind != "file" and not keep_archives:
            for path in local:
                path.unlink()
    marker = {"repo": plan.repo_id, "revision": plan.revision, "files": plan.files}
    sha256 = {
        item.paths[0]: _read_json(plan.folder / STATE / "done" / item.key).get("sha256")
        for item in plan.items
        if isinstance(item.source, GithubFile)
    }
    if sha256:
        marker["sha256"] = sha256
    (plan.folder / STATE / "complete.json").write_text(json.dumps(marker, indent=1))


def fetched_bytes(plan: Plan) -> int:
    """Bytes of ``plan``'s pending items fetched so far, read from the disk (for progress lines): items
    marked done, their files waiting in the staging folder, and partial transfers there."""
    done, staging = plan.folder / STATE / "done", plan.folder / STATE / "files"
    fetched = 0
    for item in plan.pending:
        if (done / item.key).is_file():
            fetched += item.size
        else:
            fetched += sum(
                (staging / path).stat().st_size for path in item.paths if (staging / path).is_file()
            )
    with contextlib.suppress(OSError):  # partial files come and go while the transfer runs
        fetched += sum(path.stat().st_size for path in staging.rglob("*.incomplete"))
    return fetched


def _github_file(source: GithubFile, folder: Path, staging: Path, base_url: str | None) -> str:
    """Put ``source`` in place under ``folder`` and return its sha256; a file already there (placed by
    hand) is checked, not fetched. Else it is streamed into ``staging`` and moved into place only once
    checked, so the target never holds a partial or wrong file. Raises DownloadError."""
    target = folder / source.pattern.removeprefix(source.strip)
    url = f"{(base_url or GITHUB_URL).rstrip('/')}/{source.repo}/{source.commit}/{source.pattern}"
    by_hand = (
        f"place {source.pattern} of the GitHub repository {source.repo} (commit {source.commit}, "
        f"{source.size:,} bytes) at {target} by hand, then run the same command again"
    )
    if target.is_file():
        sha, problem = _check(source, target.read_bytes())
        if problem:
            raise DownloadError(f"{target} is not the expected file: {problem}; replace it: {by_hand}")
        return sha
    staging.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=staging, suffix=".part")
    part = Path(name)
    try:
        try:
            with (
                os.fdopen(handle, "wb") as out,
                urllib.request.urlopen(url, timeout=GITHUB_TIMEOUT) as answer,
            ):
                shutil.copyfileobj(answer, out)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"Could not fetch {url} (HTTP {exc.code} {exc.reason}); {by_hand}") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise DownloadError(f"Could not fetch {url} ({reason}); {by_hand}") from exc
        sha, problem = _check(source, part.read_bytes())
        if problem:
            raise DownloadError(f"{url} is not the expected file: {problem}; {by_hand}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return sha


def _check(source: GithubFile, data: bytes) -> tuple[str, str | None]:
    """``data``'s sha256, and what is wrong with it as ``source`` (None: nothing)."""
    sha = hashlib.sha256(data).hexdigest()
    if len(data) != source.size:
        return sha, f"{len(data):,} bytes, not {source.size:,}"
    if source.sha256 and sha != source.sha256:
        return sha, f"sha256 {sha}, not {source.sha256}"
    try:
        records = json.loads(data)
    except ValueError:
        return sha, "not valid JSON"
    if not isinstance(records, list) or len(records) != source.records:
        return sha, f"not a JSON list of {source.records} records"
    if not all(isinstance(record, dict) for record in records):
        return sha, "a record is not a JSON object"
    return sha, None


def _unpack(item: Item, local: list[Path], folder: Path) -> None:
    source = item.source
    try:
        if source.kind == "file":
            target = folder / item.paths[0].removeprefix(source.strip)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(local[0], target)
        elif source.kind == "zip":
            archives.extract_zip(local[0], folder, source.rename)
        else:
            archives.extract_tar_parts(local, folder, source.rename)
    except archives.NothingExpectedError as error:  # intact, so kept: the next run need not fetch it again
        raise DownloadError(
            f"{error}; the repository changed: pass --revision to pin the one stc knows, or report it"
        ) from error
    except archives.ArchiveError:
        for path in local:  # corrupt: never reuse it
            path.unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
