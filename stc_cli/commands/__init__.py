"""The `stc` commands, one module each: parse options, call the library, print. Heavy imports (torch,
transformers) happen inside the command functions, so that `stc --help` starts fast."""

from __future__ import annotations

import typer


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr and a non-zero exit: how every user-caused error ends."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)
