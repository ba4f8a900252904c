"""The local model cache: the bundles of a registered model by version, and its aliases.

On disk, per registered model::

    <root>/<name>/<version>/   a bundle folder (model.onnx + bundle.json)
    <root>/<name>/aliases.json the version each alias last resolved to

A version folder appears only complete and checked: :meth:`ModelCache.install`
verifies a downloaded bundle in a scratch folder beside the versions, then
renames it into place, so a half-downloaded or corrupt version is never
visible. ``aliases.json`` is replaced atomically. The cache knows nothing of
where bundles come from (``connectors.model_registry`` downloads them); it is
what the processor serves from when the registry cannot be reached.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.bundle import MODEL_FILE, bundle_exists, load_bundle, save_bundle
from models.signature import load_checked
from schemas.errors import ModelError

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"


@dataclass(frozen=True, slots=True)
class FetchedModel:
    """A model bundle in the local cache, and how it got there."""

    name: str
    alias: str
    version: str
    #: The bundle folder: ``model.onnx`` + ``bundle.json`` (name and version rewritten to
    #: the registered name and version).
    path: Path
    #: True when this call downloaded the bundle (False: it was cached already).
    downloaded: bool
    #: True when the registry was unreachable and the version is the one last
    #: recorded for the alias in the cache: it may be stale.
    offline: bool = False
    #: Why the registry could not be used, when ``offline``.
    reason: str = ""


class ModelCache:
    """The cached versions and recorded aliases of one registered model under ``root``."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        #: ``<root>/<name>``: the version folders and ``aliases.json``.
        self.path = root / name

    def folder(self, version: str) -> Path:
        return self.path / version

    def has(self, version: str) -> bool:
        return bundle_exists(self.folder(version))

    # -- aliases ---------------------------------------------------------------------------

    def recorded(self) -> dict[str, str]:
        """Alias -> version, as last recorded."""
        return {alias: entry["version"] for alias, entry in self._read_aliases().items()}

    def recorded_version(self, alias: str) -> str | None:
        entry = self._read_aliases().get(alias)
        return str(entry["version"]) if isinstance(entry, dict) and "version" in entry else None

    def offline(self, alias: str, reason: str) -> FetchedModel | None:
        """The version last recorded for ``alias``, served without the registry
        (``offline=True``, ``reason`` saying why); None when its bundle is not cached."""
        version = self.recorded_version(alias)
        if version is None or not self.has(version):
            return None
        return FetchedModel(
            self.name,
            alias,
            version,
            self.folder(version),
            downloaded=False,
            offline=True,
            reason=reason,
        )

    def record(self, alias: str, version: str) -> None:
        """Remember which version ``alias`` resolved to (atomic replace of ``aliases.json``)."""
        aliases = self._read_aliases()
        if aliases.get(alias, {}).get("version") == version:
            return
        aliases[alias] = {"version": version, "recorded_at": int(time.time() * 1000)}
        self.path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".aliases-", dir=self.path)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(aliases, out, indent=2, sort_keys=True)
        os.replace(tmp, self.path / ALIASES_FILE)

    def _read_aliases(self) -> dict[str, dict[str, Any]]:
        path = self.path / ALIASES_FILE
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable model cache index %s: %s", path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    # -- installing a version --------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self, version: str) -> Iterator[Path]:
        """A scratch folder beside the versions (same file system: the final rename is
        atomic), removed afterwards whatever happens."""
        self.path.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.path))
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def install(
        self, version: str, downloaded: Path, staging: Path, *, expected_sha256: str | None
    ) -> Path:
        """Check the bundle at ``downloaded`` and move it into place as ``version``.

        Checked: ``model.onnx`` has the SHA-256 recorded at registration (when one
        was), and it loads against the bundle's feature order. The bundle's name and
        version are rewritten to the registered ones. Raises :class:`ModelError`.
        """
        onnx_bytes, meta = load_bundle(downloaded)
        actual = hashlib.sha256(onnx_bytes).hexdigest()
        if expected_sha256 and expected_sha256 != actual:
            raise ModelError(
                f"{self.name} v{version}: {MODEL_FILE} has SHA-256 {actual}, "
                f"registered as {expected_sha256}"
            )
        meta = meta.model_copy(update={"name": self.name, "version": version})
        load_checked(onnx_bytes, meta)
        ready = save_bundle(staging / "ready", onnx_bytes, meta)
        folder = self.folder(version)
        try:
            ready.rename(folder)
        except OSError:
            if not bundle_exists(folder):  # else another process cached it first
                raise
        return folder
