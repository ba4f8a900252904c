"""``streamscore autopilot simulate`` and ``streamscore retrain`` flags, from the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from streams.cli.autopilot import _hyperparameters
from streams.cli.main import app


def test_simulate_prints_the_figure_as_json() -> None:
    result = CliRunner().invoke(app, ["autopilot", "simulate", "--runs", "40", "--json"])
    assert result.exit_code == 0, result.output
    figure = json.loads(result.stdout.strip().splitlines()[-1])
    assert figure["runs"] == 40 and 0 <= figure["promoted"] <= 40
    assert figure["alpha"] == 0.05 and "p_value_rate_at_most_alpha" in figure


def test_simulate_refuses_an_alpha_outside_zero_one_in_one_line() -> None:
    result = CliRunner().invoke(app, ["autopilot", "simulate", "--alpha", "2"])
    assert result.exit_code == 2
    assert "--alpha must be in (0, 1)" in result.output


def test_hyperparameters_are_json_values_or_text() -> None:
    assert _hyperparameters(
        ["max_depth=4", "learning_rate=0.05", "criterion=entropy", "max_features=null"]
    ) == {
        "max_depth": 4,
        "learning_rate": 0.05,
        "criterion": "entropy",
        "max_features": None,
    }


def test_a_malformed_hyperparameter_is_one_error_line() -> None:
    result = CliRunner().invoke(app, ["retrain", "--hyperparameter", "depth"])
    assert result.exit_code == 2
    assert "write KEY=VALUE" in result.output
