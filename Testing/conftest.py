"""Fixtures shared by the test modules; the plain helpers behind them are in ``helpers.py``."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import write_pair  # noqa: E402


@pytest.fixture
def phantom_pair(tmp_path) -> dict:
    """fixed/moving head-like phantoms with label maps, written into ``tmp_path / "in"``."""
    return write_pair(tmp_path / "in")


@pytest.fixture
def phantom_images(tmp_path) -> dict:
    """The same pair without label maps."""
    return write_pair(tmp_path / "in", with_segs=False)
