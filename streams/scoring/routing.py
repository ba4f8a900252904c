"""A/B routing: which variant serves which entity, and feature alignment between models."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.serving import ServingModel
from schemas.errors import SignatureMismatch


def column_order(source: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """Columns of a ``source``-ordered matrix that give ``target``'s feature order."""
    index = {name: i for i, name in enumerate(source)}
    missing = [name for name in target if name not in index]
    if missing:
        raise SignatureMismatch(f"challenger needs features the champion lacks: {missing}")
    return np.array([index[name] for name in target], dtype=np.int64)


class VariantRouter:
    """A/B assignment: a stable hash of the entity key picks the variant.

    ``weights`` are normalised; one entity always lands on the same variant
    for the same weights, whatever the process, partition or replay.
    """

    def __init__(self, weights: dict[str, float]) -> None:
        total = sum(weights.values())
        if total <= 0 or any(w < 0 for w in weights.values()):
            raise ValueError(f"A/B weights must be non-negative and not all zero: {weights}")
        self.variants = list(weights)
        self._bounds = np.cumsum([w / total for w in weights.values()])
        self._bounds[-1] = 1.0
        self._cache: dict[str, int] = {}

    @staticmethod
    def position(entity: str) -> float:
        """The entity's stable place in [0, 1)."""
        digest = hashlib.blake2b(entity.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def assign(self, entities: Sequence[str]) -> np.ndarray:
        """Variant index per entity (cached: entities repeat)."""
        cache, bounds = self._cache, self._bounds
        out = np.empty(len(entities), dtype=np.int64)
        for i, entity in enumerate(entities):
            v = cache.get(entity)
            if v is None:
                v = int(np.searchsorted(bounds, self.position(entity), side="right"))
                if len(cache) < 1_000_000:
                    cache[entity] = v
            out[i] = v
        return out


@dataclass(frozen=True)
class ABRouting:
    """Serve real traffic from several models, split by entity."""

    router: VariantRouter
    #: Models in the router's variant order; the first is the champion.
    models: list[ServingModel]
    #: Per model, the champion-matrix columns in that model's feature order.
    columns: list[np.ndarray]

    @classmethod
    def build(cls, weights: dict[str, float], models: dict[str, ServingModel]) -> ABRouting:
        router = VariantRouter(weights)
        ordered = [models[v] for v in router.variants]
        champion_features = ordered[0].feature_names
        columns = [column_order(champion_features, m.feature_names) for m in ordered]
        return cls(router=router, models=ordered, columns=columns)
