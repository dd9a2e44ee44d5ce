"""`stc download`: benchmark data from the Hugging Face hub, resumable."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from stc_cli.commands import fail


def download(
    benches: Annotated[
        list[str],
        typer.Argument(
            metavar="BENCH", help="Benchmarks: ovo, streamingbench, mlvu, egoschema, videomme, demo."
        ),
    ],
    data_dir: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Data directory (default: $STC_DATA_DIR, else ~/.cache/stc)."),
    ] = None,
    videos: Annotated[bool, typer.Option(help="Fetch the videos too, not only the metadata.")] = True,
    ovo_videos: Annotated[
        str,
        typer.Option(
            metavar="src|chunked|both",
            help="OVO-Bench: src (source videos, ~44 GB), chunked (pre-cut clips, ~144 GB), both.",
        ),
    ] = "src",
    revision: Annotated[
        str | None, typer.Option(metavar="REV", help="Dataset revision (branch, tag or commit).")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            metavar="TOKEN", help="Hub token for gated datasets (default: $HF_TOKEN, else your hub login)."
        ),
    ] = None,
    endpoint: Annotated[str | None, typer.Option(metavar="URL", help="Hub endpoint, e.g. a mirror.")] = None,
    github_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL", help="Base URL for files published on GitHub (https://raw.githubusercontent.com)."
        ),
    ] = None,
    keep_archives: Annotated[
        bool, typer.Option("--keep-archives", help="Keep the archives after unpacking them.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be fetched, and its size; fetch nothing.")
    ] = False,
) -> None:
    """Bring benchmarks into the data directory, in the layout `stc check` and `stc eval` read.

    Resumable: running the same command again continues where it stopped, and is a no-op once complete.
    """
    from stc_cli.datasets import archives, hub
    from stc_cli.datasets.datadir import resolve_data_dir
    from stc_cli.datasets.download import (
        MANIFESTS,
        DataDirError,
        DownloadError,
        check_writable,
        demo_changes,
        gated_note,
        install_demo,
        plan,
    )

    unknown = [bench for bench in benches if bench not in MANIFESTS and bench != "demo"]
    if unknown:  # before any transfer: a typo in the last name must not wait for the first download
        fail(f"unknown benchmark {unknown[0]!r}; stc download knows: {', '.join([*MANIFESTS, 'demo'])}")
    root = resolve_data_dir(data_dir)
    # Name the setting the folder came from, so that the error says what to change.
    given = (
        f"--data-dir {root}" if data_dir is not None else f"data directory {root} ($STC_DATA_DIR or default)"
    )
    try:
        token = hub.resolve_token(token)
        for bench in benches:
            check_writable(root / bench, given)
            if bench == "demo":
                if demo_changes(root):
                    typer.echo(f"demo: copied from the stc package into {install_demo(root)}")
                else:  # left alone: rewriting identical files would only change their times
                    typer.echo(f"demo: already there in {install_demo(root)}, unchanged; nothing to do")
                continue
            note = gated_note(bench, endpoint)
            if note:  # before listing, so that --dry-run says it before any transfer is tried
                typer.echo(f"{bench}: note: {note}")
            todo = plan(
                bench,
                root,
                videos=videos,
                ovo_videos=ovo_videos,
                revision=revision,
                token=token,
                endpoint=endpoint,
            )
            if todo.note:
                typer.echo(f"{bench}: note: {todo.note}")
            if todo.complete:
                typer.echo(
                    f"{bench}: complete in {todo.folder} ({todo.repo_id}@{todo.revision[:8]}); nothing to do"
                )
                continue
            typer.echo(todo.summary())
            if dry_run:
                for item in todo.pending:
                    typer.echo(f"  {item.source.kind:9} {item.size / 1e6:10.1f} MB  {', '.join(item.paths)}")
                continue
            _fetch(
                todo,
                token=token,
                endpoint=endpoint,
                keep_archives=keep_archives,
                github_url=github_url,
                progress=typer.echo,
            )
            typer.echo(f"{bench}: complete in {todo.folder}")
    except DataDirError as error:
        fail(str(error), code=2)
    except (DownloadError, hub.HubError, archives.ArchiveError) as error:
        fail(str(error), code=1)
    except OSError as error:  # e.g. a disk that fills up or a folder made read-only midway
        where = error.filename or root
        fail(
            f"{where}: {error.strerror or error}; check the data directory, then run the same command again",
            code=1,
        )


def _fetch(todo, **options) -> None:
    """``fetch`` with a line per item. On a terminal huggingface_hub draws each file's bar under it; in a
    log (stderr not a terminal), a line each tenth of the bytes and at least every 30 s."""
    from stc_cli.datasets.download import fetch, fetched_bytes
    from stc_cli.progress import LogLines

    if sys.stderr.isatty():
        fetch(todo, **options)
        return
    with LogLines(f"stc download {todo.bench}", "MB", poll=lambda: fetched_bytes(todo) / 1e6) as log:
        log.start(sum(item.size for item in todo.pending) / 1e6)
        fetch(todo, **options)
        log.update(fetched_bytes(todo) / 1e6)
