"""Offline evaluation and the model card's plots: doctested metrics, lazy matplotlib."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import numpy as np

import models.evaluation
from models.plots import plot_confusion_matrix, plot_predicted_vs_actual


def test_evaluation_doctests_pass() -> None:
    result = doctest.testmod(models.evaluation)
    assert result.attempted >= 3
    assert result.failed == 0


def test_importing_the_card_and_the_plots_does_not_import_matplotlib() -> None:
    code = (
        "import sys, models.card, models.plots; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    truth = np.array(["0", "1", "1", "0"])
    drawn = plot_confusion_matrix(
        truth, np.array(["0", "1", "0", "0"]), ["0", "1"], tmp_path / "a" / "cm.png"
    )
    scatter = plot_predicted_vs_actual(
        np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.0, 2.5]), tmp_path / "pva.png"
    )
    for path in (drawn, scatter):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
