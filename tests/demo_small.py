"""The demo benchmark's first version, kept as a test fixture: 3 six-second clips at 2 fps (12 frames
each: a red square moving right, a green one moving left, a blue one moving right) and 12 questions
(tasks color, direction, position), as ``scripts/make_demo_data.py`` wrote them before the demo grew
(``stc_cli/benchmarks/demo_scenes.py``). Tests of the runner, the run folder and ``stc eval`` count its
frames, ids and answers; the shipped demo is tested in ``tests/benchmarks/test_demo.py``.

Layout as a data directory: ``DATA_DIR / "demo" / "demo.json"`` and ``DATA_DIR / "demo" / "videos"``.
Read it in place (``--data-dir DATA_DIR``) or copy it (``install``) where a test changes files."""

import shutil
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "fixtures" / "demo_small"


def install(data_dir: Path) -> Path:
    """A copy of the fixture as ``<data_dir>/demo``, returned."""
    return Path(shutil.copytree(DATA_DIR / "demo", Path(data_dir) / "demo"))
