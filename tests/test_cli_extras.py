"""Training commands in an install without the training extra: one line naming the extra, not a traceback."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from app.cli import TRAINING_EXTRA_HINT, cli, main
from app.errors import ConfigurationError

TRAINING_COMMANDS = [
    ["train", "--config", "configs/default.toml"],
    ["evaluate", "--model", "models/default", "--data", "x.jsonl", "--out", "out"],
    ["export", "--run", "runs/default", "--out", "out"],
    ["experiment", "learning-curve"],
    ["base", "build", "--out", "out"],
    ["data", "validate", "x.jsonl"],
]


@pytest.mark.parametrize("arguments", TRAINING_COMMANDS, ids=lambda arguments: " ".join(arguments[:2]))
def test_training_commands_without_the_training_extra_name_it(
    arguments: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes an import fail with ModuleNotFoundError, as in a service-only install.
    for name in list(sys.modules):
        if name == "training" or name.startswith("training."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "training", None)
    result = CliRunner().invoke(cli, arguments)
    assert isinstance(result.exception, ConfigurationError), result.output
    assert str(result.exception).startswith(TRAINING_EXTRA_HINT)


def test_the_cli_prints_the_missing_extra_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    for name in list(sys.modules):
        if name.startswith("training.train") or name.startswith("training.model"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "argv", ["kommunrouter", "train", "--set", "epochs=1"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {TRAINING_EXTRA_HINT} (module 'torch' is missing)"


def test_other_missing_modules_are_not_blamed_on_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "training.train", None)
    monkeypatch.setitem(sys.modules, "tomllib", None)
    for name in list(sys.modules):
        if name == "training.config":
            monkeypatch.delitem(sys.modules, name)
    result = CliRunner().invoke(cli, ["train"])
    assert isinstance(result.exception, ModuleNotFoundError)
