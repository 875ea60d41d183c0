"""Fixtures of the engine-adapter tests: a name prefix whose containers are removed after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import engine as test_engine
from tests.support.lab import new_prefix


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh prefix for the test's names; its containers are removed, even on failure."""
    made = new_prefix()
    try:
        yield made
    finally:
        test_engine.remove_prefixed(made)
