"""The CLI as a test drives it: `snapledger --config <file> ...` in-process."""

from __future__ import annotations

import json

import pytest

from api.cli import main
from api.config import Config

NO_SCHEDULER = "[worker]\nscheduler = false\n"


class Cli:
    """Runs `snapledger --config <file> ...` in-process and answers (exit code, out, err)."""

    def __init__(self, config: Config, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.path = str(config.data_dir.parent / "snapledger.toml")
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--config", self.path, *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, f"exit {code}: {out}{err}"
        return out

    def json(self, *args: str) -> object:
        return json.loads(self.ok(*args, "--json"))
