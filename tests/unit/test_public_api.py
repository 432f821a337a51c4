"""The package's public surface is what ``__all__`` says, and every name in it exists."""

from __future__ import annotations

import streamcar


def test_all_names_exist() -> None:
    missing = [name for name in streamcar.__all__ if not hasattr(streamcar, name)]
    assert missing == []


def test_all_is_unique_and_names_the_wire_types() -> None:
    assert len(set(streamcar.__all__)) == len(streamcar.__all__)  # ruff (RUF022) keeps it sorted
    assert {"Event", "Reply", "Result", "StreamcarError"} <= set(streamcar.__all__)


def test_errors_carry_their_policy() -> None:
    assert streamcar.ConfigError("x").exit_code == 2
    assert streamcar.UsageError("x").exit_code == 2
    assert streamcar.ToolingError("x").exit_code == 1
    assert streamcar.RetriableCallError("x").retriable is True
    assert streamcar.PermanentCallError("x").retriable is False
    assert issubclass(streamcar.ConfigError, streamcar.StreamcarError)


def test_a_config_can_be_built_from_the_top_level_names() -> None:
    """What docs/python.md builds a Config from is importable from ``streamcar`` itself."""
    import streamcar.config

    models = ["Config", "KafkaConfig", "PipelineConfig", "ConsumeConfig", "CallConfig", "PublishConfig"]
    assert set(models) <= set(streamcar.__all__)
    assert all(getattr(streamcar, name) is getattr(streamcar.config, name) for name in [*models, "DeadLetterConfig"])
    assert streamcar.load_config is streamcar.config.load_config
