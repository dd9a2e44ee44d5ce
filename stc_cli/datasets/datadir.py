"""Where benchmark data lives: ``--data-dir``, else ``$STC_DATA_DIR``, else ``~/.cache/stc``."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    return Path(os.environ.get("STC_DATA_DIR") or Path.home() / ".cache" / "stc").expanduser()


def benchmark_data_dir(module, data_dir: Path) -> tuple[Path, str | None]:
    """The data directory to read benchmark ``module`` from, and a note when it is not ``data_dir``: the
    demo works before ``stc download demo``, from the copy shipped in the package."""
    if module.NAME == "demo" and not (data_dir / module.FOLDER / module.METADATA).is_file():
        return module.PACKAGED.parent, "demo: using the copy shipped in the package"
    return data_dir, None
