"""In-memory twins for the autopilot's unit tests: a registry of aliases, tails and sinks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from connectors.model_registry import RegistryError, RegistryUnavailable
from models.cache import FetchedModel
from models.lifecycle import LifecycleEvent
from models.roles import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from schemas.settings import Settings
from streams.evaluation.verdict import Verdict

NAME = "m"


class MemoryRegistry:
    """Aliases in a dict, with :class:`connectors.model_registry.ModelRegistry`'s promote and
    rollback semantics. ``fail_writes_after``: that many alias writes succeed, then every
    call fails as if MLflow went away; ``down``: every call fails."""

    def __init__(self, aliases: Mapping[str, str]) -> None:
        self.aliases = dict(aliases)
        self.tags: dict[str, dict[str, str]] = {}
        self.down = False
        self.fail_writes_after: int | None = None
        self.writes = 0

    def _check(self, write: bool = False) -> None:
        if self.down:
            raise RegistryUnavailable("MLflow is down (test)")
        if write:
            if self.fail_writes_after is not None and self.writes >= self.fail_writes_after:
                self.down = True
                raise RegistryUnavailable("MLflow went away half-way (test)")
            self.writes += 1

    def current_versions(self, name: str) -> dict[str, str]:
        self._check()
        return dict(self.aliases)

    def _set(self, alias: str, version: str) -> None:
        self._check(write=True)
        self.aliases[alias] = version

    def _delete(self, alias: str) -> None:
        self._check(write=True)
        self.aliases.pop(alias, None)

    def promote(self, name: str, *, actor: str) -> LifecycleEvent:
        self._check()
        challenger, old = self.aliases.get(CHALLENGER), self.aliases.get(CHAMPION)
        if challenger is None or challenger == old:
            raise RegistryError("nothing to promote")
        if old is not None:
            self._set(PREVIOUS_CHAMPION, old)
            self.tags.setdefault(challenger, {})["streamscore.previous_champion"] = old
        self._set(CHAMPION, challenger)
        return LifecycleEvent.now(
            "promoted",
            name,
            challenger,
            actor,
            alias=CHAMPION,
            new_version=challenger,
            old_version=old,
        )

    def rollback(self, name: str, *, actor: str) -> LifecycleEvent:
        self._check()
        current, target = self.aliases.get(CHAMPION), self.aliases.get(PREVIOUS_CHAMPION)
        if current is None or target is None:
            raise RegistryError("nothing to roll back")
        earlier = self.tags.get(target, {}).get("streamscore.previous_champion")
        self._set(CHAMPION, target)
        if earlier and earlier != target:
            self._set(PREVIOUS_CHAMPION, earlier)
        else:
            self._delete(PREVIOUS_CHAMPION)
        return LifecycleEvent.now(
            "rolled_back",
            name,
            target,
            actor,
            alias=CHAMPION,
            old_version=current,
            new_version=target,
        )

    def set_alias(self, name: str, alias: str, version: str, *, actor: str) -> LifecycleEvent:
        old = self.current_versions(name).get(alias)
        self._set(alias, version)
        return LifecycleEvent.now(
            "alias_set", name, version, actor, alias=alias, new_version=version, old_version=old
        )

    def delete_alias(self, name: str, alias: str, *, actor: str) -> LifecycleEvent:
        old = self.current_versions(name).get(alias)
        if old is not None:
            self._delete(alias)
        return LifecycleEvent.now(
            "alias_set", name, old or "", actor, alias=alias, old_version=old, deleted="true"
        )

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        self._check()
        self.tags.setdefault(version, {}).update(tags)

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        self._check()
        return dict(self.tags.get(version, {}))

    def fetch(self, name: str, alias: str) -> FetchedModel:
        raise RegistryError("no bundles in the memory registry")


class ListTail:
    """A tail whose records a test appends; each poll returns what came since the last."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []

    def poll(self, max_records: int = 20_000, budget_s: float = 0.5) -> list[dict[str, Any]]:
        out, self.pending = self.pending, []
        return out

    def close(self) -> None:
        pass


class ListSink:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, records: Sequence[dict[str, Any]]) -> None:
        self.published.extend(records)

    def actions(self) -> list[str]:
        return [r["action"] for r in self.published]


def cumulative(
    variant: str,
    version: str,
    count: int,
    accuracy: float,
    emitted_at: int,
    verdict: Verdict | None = None,
) -> dict[str, Any]:
    """A cumulative ``sensor.evaluation`` record, as the evaluator emits it."""
    return {
        "variant": variant,
        "model_version": version,
        "window": "cumulative",
        "window_start": 0,
        "window_end": emitted_at,
        "count": count,
        "metrics": {"accuracy": accuracy},
        "verdict": verdict.decision if verdict is not None else None,
        "evidence": verdict.to_evidence() if verdict is not None else {},
        "emitted_at": emitted_at,
    }


def verdict_records(
    champion: str, challenger: str, verdict: Verdict, at: int, accuracies: tuple[float, float]
) -> list[dict[str, Any]]:
    """Both variants' cumulative records carrying one verdict (one emission)."""
    return [
        cumulative(CHAMPION, champion, verdict.n, accuracies[0], at, verdict),
        cumulative(CHALLENGER, challenger, verdict.n, accuracies[1], at, verdict),
    ]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        registry={"model_name": NAME},
        autopilot={
            "mode": "auto",
            "min_paired_labels": 500,
            "min_shadow_s": 10.0,
            "cooldown_s": 100.0,
            "cbpe": {"enabled": False},
        },
    )
