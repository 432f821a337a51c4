"""The package's public surface is what ``__all__`` says, and every name in it exists."""

from __future__ import annotations

import streamcar


def test_all_names_exist() -> None:
    missing = [name for name in streamcar.__all__ if not hasattr(streamcar, name)]
    assert missing == []


def test_all_is_sorted_and_unique() -> None:
    assert list(streamcar.__all__) == sorted(set(streamcar.__all__))


def test_errors_carry_their_policy() -> None:
    assert streamcar.ConfigError("x").exit_code == 2
    assert streamcar.UsageError("x").exit_code == 2
    assert streamcar.ToolingError("x").exit_code == 1
    assert streamcar.RetriableCallError("x").retriable is True
    assert streamcar.PermanentCallError("x").retriable is False
    assert issubclass(streamcar.ConfigError, streamcar.StreamcarError)
