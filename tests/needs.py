"""What a test needs from the machine: under CI, which installs all of it (`.ci/run`), its absence
fails the test; elsewhere the test is skipped with the same one-line reason."""
from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
