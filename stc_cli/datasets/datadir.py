"""Where benchmark data lives: ``--data-dir``, else ``$STC_DATA_DIR``, else ``~/.cache/stc``."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    return Path(os.environ.get("STC_DATA_DIR") or Path.home() / ".cache" / "stc").expanduser()
