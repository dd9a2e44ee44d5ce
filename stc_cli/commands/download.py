"""`stc download`: benchmark data from the Hugging Face hub, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stc_cli.commands import fail


def download(
    benches: Annotated[
        list[str], typer.Argument(help="Benchmarks: ovo, streamingbench, mlvu, egoschema, videomme, demo.")
    ],
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default: $STC_DATA_DIR, else ~/.cache/stc).")
    ] = None,
    videos: Annotated[bool, typer.Option(help="Fetch the videos too, not only the metadata.")] = True,
    ovo_videos: Annotated[
        str,
        typer.Option(help="OVO-Bench: src (source videos, ~44 GB), chunked (pre-cut clips, ~144 GB), both."),
    ] = "src",
    revision: Annotated[str | None, typer.Option(help="Dataset revision (branch, tag or commit).")] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Hub token for gated datasets (default: $HF_TOKEN, else your hub login)."),
    ] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub endpoint, e.g. a mirror.")] = None,
    github_url: Annotated[
        str | None,
        typer.Option(help="Base URL for files published on GitHub (https://raw.githubusercontent.com)."),
    ] = None,
    keep_archives: Annotated[bool, typer.Option(help="Keep the archives after unpacking them.")] = False,
    dry_run: Annotated[
        bool, typer.Option(help="List what would be fetched, and its size; fetch nothing.")
    ] = False,
) -> None:
    """Bring benchmarks into the data directory, in the layout `stc check` and `stc eval` read.

    Resumable: running the same command again continues where it stopped, and is a no-op once complete.
    """
    from stc_cli import archives, hub
    from stc_cli.datadir import resolve_data_dir
    from stc_cli.download import DownloadError, fetch, install_demo, plan

    root = resolve_data_dir(data_dir)
    try:
        token = hub.resolve_token(token)
        for bench in benches:
            if bench == "demo":
                typer.echo(f"demo: copied from the stc package into {install_demo(root)}")
                continue
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
            # One line per item; huggingface_hub draws each file's own progress bar under it.
            fetch(
                todo,
                token=token,
                endpoint=endpoint,
                keep_archives=keep_archives,
                github_url=github_url,
                progress=typer.echo,
            )
            typer.echo(f"{bench}: complete in {todo.folder}")
    except (DownloadError, hub.HubError, archives.ArchiveError) as error:
        fail(str(error), code=1)
