"""Alias moves that are done whole or undone: promotion and rollback over MLflow.

A promotion is several registry writes (``previous-champion``, a tag,
``champion``, then ``challenger`` back to the replaced champion so that the
paired comparison goes on), and MLflow has no transaction: it may fail between
any two. The protocol, in order:

1. read the role aliases; if they are not what the decision was made on, do
   nothing (:class:`StaleMove`): the controller decides again on what is there;
2. write the move; read the aliases back and check ``champion`` and
   ``challenger`` are the target;
3. on any failure in 2, write the aliases read in 1 back (delete the ones that
   were not set) and raise :class:`MoveFailed`: nothing changed, retry later;
4. if that undo fails too (MLflow went away), raise :class:`MoveDeferred` with
   the move as a :class:`~streams.autopilot.state.PendingMove`; the controller
   saves it and, before anything else at every later look, :func:`reconcile` s
   it: finished by someone (aliases at the target), untouched (as before), or
   undone now.

The processor follows the aliases by polling them; a move takes a few
registry calls, milliseconds apart, so a poll may see it half-way only in
that window, and the next poll sees it whole.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from connectors.model_registry import RegistryError, RegistryUnavailable
from models.lifecycle import LifecycleEvent
from models.roles import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from schemas.errors import InfrastructureError, StreamscoreError
from streams.autopilot.state import PendingMove

log = logging.getLogger(__name__)

MoveKind = Literal["promote", "rollback"]
#: The aliases a move reads, writes and restores.
ROLE_ALIASES = (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)


class AliasRegistry(Protocol):
    """What the autopilot needs of :class:`connectors.model_registry.ModelRegistry`."""

    def current_versions(self, name: str) -> dict[str, str]: ...

    def promote(self, name: str, *, actor: str) -> LifecycleEvent: ...

    def rollback(self, name: str, *, actor: str) -> LifecycleEvent: ...

    def set_alias(self, name: str, alias: str, version: str, *, actor: str) -> LifecycleEvent: ...

    def delete_alias(self, name: str, alias: str, *, actor: str) -> LifecycleEvent: ...

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None: ...


class StaleMove(StreamscoreError):
    """The aliases changed since the decision: nothing was done."""


class MoveFailed(InfrastructureError):
    """The move failed and was undone: the aliases are as before. Retry later."""

    def __init__(self, message: str, events: list[LifecycleEvent]) -> None:
        super().__init__(message)
        self.events = events


class MoveDeferred(InfrastructureError):
    """The move failed half-way and could not be undone yet: ``pending`` must be saved."""

    def __init__(self, message: str, pending: PendingMove, events: list[LifecycleEvent]) -> None:
        super().__init__(message)
        self.pending = pending
        self.events = events


def role_aliases(aliases: Mapping[str, str]) -> dict[str, str]:
    """The aliases a move is about, of everything the registry lists."""
    return {alias: aliases[alias] for alias in ROLE_ALIASES if alias in aliases}


@dataclass(frozen=True)
class Move:
    """A promotion or a rollback decided on the role aliases ``before``."""

    kind: MoveKind
    before: dict[str, str]
    details: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> dict[str, str]:
        """``champion`` and ``challenger`` once the move is done: the replaced champion
        becomes the challenger, so the paired comparison goes on."""
        source = CHALLENGER if self.kind == "promote" else PREVIOUS_CHAMPION
        return {CHAMPION: self.before[source], CHALLENGER: self.before[CHAMPION]}

    def pending(self, now_s: float) -> PendingMove:
        return PendingMove(self.kind, dict(self.before), self.target, dict(self.details), now_s)


def _at(aliases: Mapping[str, str], target: Mapping[str, str]) -> bool:
    return all(aliases.get(alias) == version for alias, version in target.items())


def apply_move(
    registry: AliasRegistry, name: str, move: Move, *, actor: str, now_s: float
) -> list[LifecycleEvent]:
    """Steps 1-4 of the module docstring; returns the registry's lifecycle events."""
    current = role_aliases(registry.current_versions(name))
    if current != move.before:
        raise StaleMove(f"{name}: aliases are {current}, the {move.kind} was decided on "
                        f"{move.before}")  # fmt: skip
    events: list[LifecycleEvent] = []
    try:
        if move.kind == "promote":
            events.append(registry.promote(name, actor=actor))
        else:
            events.append(registry.rollback(name, actor=actor))
        events.append(registry.set_alias(name, CHALLENGER, move.before[CHAMPION], actor=actor))
        after = role_aliases(registry.current_versions(name))
        if not _at(after, move.target):
            raise RegistryError(f"{name}: aliases are {after} after the {move.kind}")
    except (RegistryUnavailable, RegistryError) as exc:
        log.warning("%s of %s failed half-way (%s): undoing", move.kind, name, exc)
        try:
            events.extend(undo(registry, name, move.before, actor=actor))
        except RegistryUnavailable as again:
            raise MoveDeferred(
                f"{move.kind} of {name} failed half-way ({exc}) and could not be undone "
                f"({again}): it is finished or undone at the next look",
                move.pending(now_s),
                events,
            ) from again
        raise MoveFailed(
            f"{move.kind} of {name} failed ({exc}); the aliases are as before", events
        ) from exc
    return events


def undo(
    registry: AliasRegistry, name: str, before: Mapping[str, str], *, actor: str
) -> list[LifecycleEvent]:
    """Put the role aliases back to ``before`` (set or delete each that differs)."""
    current = role_aliases(registry.current_versions(name))
    events = []
    for alias in ROLE_ALIASES:
        wanted, present = before.get(alias), current.get(alias)
        if wanted == present:
            continue
        if wanted is None:
            events.append(registry.delete_alias(name, alias, actor=actor))
        else:
            events.append(registry.set_alias(name, alias, wanted, actor=actor))
    return events


Reconciled = Literal["completed", "untouched", "undone"]


def reconcile(
    registry: AliasRegistry, name: str, pending: PendingMove, *, actor: str
) -> tuple[Reconciled, list[LifecycleEvent]]:
    """Settle a move left half-way: raises :class:`RegistryUnavailable` while MLflow is away."""
    current = role_aliases(registry.current_versions(name))
    if _at(current, pending.after):
        return "completed", []
    if current == pending.before:
        return "untouched", []
    return "undone", undo(registry, name, pending.before, actor=actor)
