"""pyproject.toml names only files that exist, and the package data it ships is there."""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent


def test_every_file_pyproject_names_exists():
    text = (ROOT / "pyproject.toml").read_text()
    config = tomllib.loads(text)
    assert (ROOT / config["project"]["readme"]).is_file()
    for package, patterns in config["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            assert list((ROOT / package).glob(pattern)), f"package-data {pattern!r} matches nothing"
    mentioned = re.findall(r"\b((?:docs|stc_cli|scripts|tests)/[\w./-]*)", text)
    assert mentioned and all((ROOT / path.rstrip(".")).exists() for path in mentioned), mentioned
