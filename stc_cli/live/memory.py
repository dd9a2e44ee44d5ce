"""How much memory a stream holds: the bytes a model keeps for it, and the process's resident memory.

What grows with the stream, per model (``docs``: live mode, "Memory on long streams"):

- ReKV: the sliding window (``--n-local`` tokens) is bounded; every frame's KV block (kept tokens x
  layers x KV heads x head size x 2, on the host) and its representative key (layers x heads x head
  size, on the model's device) are kept for the whole stream, since any of them may be retrieved:
  this grows by design, as upstream, and ``held_growth_bytes_per_stream_hour`` in the summary says by
  how much.
- LiveCC: the KV cache of every chunk, unless ``--max-cache-tokens`` bounds it (evicting the oldest).
- STC: the pruner's temporal memory is a window of chunk means, the cacher one reference per layer:
  both bounded.
"""

from __future__ import annotations

import os
import resource


def held_bytes(model) -> int | None:
    """Bytes ``model`` holds for the current stream (its memory, STC's state), where it says; None
    for a model this does not know."""
    total, known = 0, False
    llm = getattr(model, "llm", None)  # ReKV's memory
    if llm is not None and hasattr(llm, "nbytes"):
        total, known = total + llm.nbytes(), True
    cache = getattr(model, "cache", None)  # LiveCC's KV cache
    for layer in getattr(cache, "layers", None) or ():
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if tensor is not None and hasattr(tensor, "nbytes"):
                total, known = total + tensor.nbytes, True
    for part in (getattr(model, "pruner", None), getattr(model, "cacher", None)):
        if part is not None and hasattr(part, "state_nbytes"):
            total, known = total + part.state_nbytes(), True
    return total if known else None


def rss_bytes() -> int | None:
    """The process's resident memory now (Linux), None elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def size(n: int | None) -> str:
    """``n`` bytes for people: 812 B, 3.4 MB, 1.2 GB."""
    if n is None:
        return "n/a"
    if abs(n) < 1000:
        return f"{n} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if abs(n) < 1000 or unit == "GB":
            break
    return f"{n:.1f} {unit}"
