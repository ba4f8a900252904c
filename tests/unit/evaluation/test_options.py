"""What the evaluator derives of the champion: its positive class and task."""

from __future__ import annotations

from pathlib import Path

from schemas.settings import ModelSettings, Settings
from streams.evaluation.options import positive_class


def test_positive_class_is_the_last_class(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, models=ModelSettings(dir=tmp_path / "none"))
    assert positive_class(settings, ("neg", "pos")) == ("pos", "classification")
    assert positive_class(settings, ("a", "b", "c")) == (None, "classification")
    assert positive_class(settings, None) == (None, "unknown")
