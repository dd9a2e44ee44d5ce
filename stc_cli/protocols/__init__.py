"""Named evaluation protocols, one table per base system (``rekv.py``, ``livecc.py``).

Every (model, benchmark) pair has a default, the first preset listed for it, which reproduces the
released harness behind the published numbers; ``--protocol NAME`` picks another and single flags
(``--fps``, ``--max-new-tokens``, ...) override single settings (``Protocol.override``).
"""

from __future__ import annotations

from stc_cli.protocols import dispider as dispider_protocols
from stc_cli.protocols import livecc, rekv
from stc_cli.protocols import qwenvl as qwenvl_protocols
from stc_cli.protocols import streamforest as streamforest_protocols
from stc_cli.protocols.base import Protocol

PRESETS: tuple[Protocol, ...] = (*rekv.PRESETS, *livecc.PRESETS)
PRESETS = (*PRESETS, *streamforest_protocols.PRESETS)
PRESETS = (*PRESETS, *qwenvl_protocols.PRESETS)
PRESETS = (*PRESETS, *dispider_protocols.PRESETS)


def available(model: str, bench: str) -> list[Protocol]:
    """The protocols of ``model`` on ``bench``, the default first."""
    return [p for p in PRESETS if (p.model, p.bench) == (model, bench)]


def resolve(model: str, bench: str, name: str | None = None) -> Protocol:
    """The protocol ``name`` (None: the default) of ``model`` on ``bench``.

    Raises ValueError naming the known protocols of the pair, or where ``name`` applies instead.
    """
    known = available(model, bench)
    if not known:
        raise ValueError(f"no protocol for --model {model} on --bench {bench}")
    if name is None:
        return known[0]
    for protocol in known:
        if protocol.name == name:
            return protocol
    elsewhere = sorted({f"--model {p.model} --bench {p.bench}" for p in PRESETS if p.name == name})
    fits = f"; {name} is for {', '.join(elsewhere)}" if elsewhere else ""
    hint = " (stream and clip are --schedule values)" if name in ("stream", "clip", "auto") else ""
    raise ValueError(
        f"unknown --protocol {name!r} for --model {model} on --bench {bench}{hint}; "
        f"known: {', '.join(p.name for p in known)}{fits}"
    )


__all__ = ["PRESETS", "Protocol", "available", "resolve"]
