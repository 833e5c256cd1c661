"""With no broker at the bootstrap address, every command that reads or writes Kafka ends with
one clear line and exit code 2, not a traceback (no broker is needed here: nothing listens on
port 1)."""

from __future__ import annotations

import pytest

from model_canary.agents.cli.main import main

ABSENT = ("--bootstrap", "127.0.0.1:1", "--connect-timeout", "1")


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "router", "--rounds", "1", *ABSENT],
        ["bench", "evaluator", *ABSENT],
        ["feedback", "--request-id", "r1", "--model", "iris", "--label", "x", *ABSENT],
        ["plan", "check", "--model", "iris", *ABSENT],
    ],
)
def test_a_command_without_a_broker_says_so_in_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "canary: error: Kafka at 127.0.0.1:1 is not reachable" in err, err
    assert "Traceback" not in err
