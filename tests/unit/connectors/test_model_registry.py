"""The MLflow registry adapter against a real MLflow with a sqlite store (no mocks).

Both reference models are trained and registered once for the module (the
``registered`` fixture, ~8 s); tests that move aliases put them back.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fastavro
import pytest
from typer.testing import CliRunner

from connectors.model_registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    ModelRegistry,
    RegistryError,
    RegistryUnavailable,
)
from models.bundle import MODEL_FILE, load_bundle
from models.datasets import shuttle
from schemas.catalog import load_schema, schema_text
from schemas.errors import ConfigError, ModelError, SignatureMismatch
from streams.cli.models import app, train_models

NAME = "shuttle-test"

# MLflow's own sqlalchemy models trip a deprecation warning of sqlalchemy; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")


@dataclass
class Registered:
    home: Path
    registry: ModelRegistry
    champion: str
    challenger: str


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registered]:
    home = tmp_path_factory.mktemp("home")
    registry = ModelRegistry.open(home)
    events = train_models(registry, NAME, "tester@ci")
    assert [e.action for e in events] == ["registered", "registered", "alias_set", "alias_set"]
    yield Registered(home, registry, events[0].model_version, events[1].model_version)


@pytest.fixture
def reg(registered: Registered) -> Iterator[Registered]:
    """The shared registry; the test must leave the champion/challenger aliases as it found them."""
    yield registered
    aliases = registered.registry.current_versions(NAME)
    assert aliases.get(CHAMPION) == registered.champion
    assert aliases.get(CHALLENGER) == registered.challenger


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- tracking and registration ----------------------------------------------------------------


def test_training_registers_both_reference_models_with_roles(reg: Registered) -> None:
    registry = reg.registry
    assert registry.current_versions(NAME) == {CHAMPION: reg.champion, CHALLENGER: reg.challenger}
    versions = registry.list_versions(NAME)
    assert [(v.version, v.aliases) for v in versions] == [
        (reg.champion, [CHAMPION]),
        (reg.challenger, [CHALLENGER]),
    ]
    champion = registry.describe(NAME, reg.champion)
    assert champion.tags["streamscore.algorithm"] == "GradientBoostingClassifier"
    assert champion.tags["dataset.sha256"] == shuttle().content_hash
    assert champion.params["dataset.sha256"] == shuttle().content_hash
    assert champion.params["dataset.name"] == "river.datasets.Shuttle"
    assert champion.params["feature_order"] == ",".join(f"f{i}" for i in range(1, 10))
    assert champion.params["model.n_estimators"] == "50"
    assert set(champion.metrics) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    assert champion.metrics["accuracy"] > 0.99
    assert champion.source.endswith("/bundle")


def test_run_logs_bundle_signature_profile_plots_and_model_card(reg: Registered) -> None:
    info = reg.registry.describe(NAME, reg.challenger)
    assert {
        "bundle/model.onnx",
        "bundle/bundle.json",
        "signature.json",
        "profile.json",
        "evaluation.json",
        "model_card.md",
        "plots/confusion_matrix.png",
        "plots/roc_curve.png",
        "plots/feature_importance.png",
    } <= set(info.artifacts)
    card = reg.registry.model_card(NAME, reg.challenger)
    assert card.startswith(f"# Model card: {NAME} v{reg.challenger}")
    for heading in ("## Intended use", "## Data", "## Metrics", "## Limitations"):
        assert heading in card
    assert "## Fairness and bias (performance by slice)" in card
    assert shuttle().content_hash in card
    # The most important feature of the random forest is sliced into four quantile slices.
    assert card.count("\n| f1 | (") == 4
    assert "RandomForestClassifier" in card


# -- aliases, promote, rollback ---------------------------------------------------------------


def test_promote_then_rollback_restores_the_exact_previous_version(
    reg: Registered, tmp_path: Path
) -> None:
    registry = reg.registry
    before = registry.current_versions(NAME)
    champion_sha = registry.describe(NAME, reg.champion).tags["streamscore.onnx_sha256"]

    promoted = registry.promote(NAME, actor="alice")
    assert (promoted.action, promoted.old_version, promoted.new_version) == (
        "promoted",
        reg.champion,
        reg.challenger,
    )
    assert registry.current_versions(NAME) == {
        CHAMPION: reg.challenger,
        CHALLENGER: reg.challenger,
        PREVIOUS_CHAMPION: reg.champion,
    }
    rolled = registry.rollback(NAME, actor="bob")
    assert (rolled.action, rolled.old_version, rolled.new_version) == (
        "rolled_back",
        reg.challenger,
        reg.champion,
    )
    assert registry.current_versions(NAME) == before
    fetched = registry.fetch(NAME, CHAMPION, tmp_path / "cache")
    assert fetched.version == reg.champion
    assert _sha256(fetched.path / MODEL_FILE) == champion_sha


def test_lifecycle_events_are_audit_records(reg: Registered) -> None:
    event = reg.registry.promote(NAME, actor="alice")
    reg.registry.rollback(NAME, actor="alice")
    record = event.audit_record()
    fields = [f["name"] for f in json.loads(schema_text("audit_event"))["fields"]]
    assert list(record) == fields
    assert record["details"] == {
        "alias": CHAMPION,
        "old_version": reg.champion,
        "new_version": reg.challenger,
    }
    out = io.BytesIO()
    fastavro.schemaless_writer(out, load_schema("audit_event"), record)
    out.seek(0)
    assert fastavro.schemaless_reader(out, load_schema("audit_event"), None) == record


def test_successive_rollbacks_walk_back_through_promotions(reg: Registered) -> None:
    registry = reg.registry
    third = registry.register_onnx_file(
        registry.fetch(NAME, CHAMPION).path, registered_name=NAME, actor="carol"
    ).model_version
    try:
        registry.promote(NAME, actor="carol")  # champion -> the reference challenger
        registry.set_alias(NAME, CHALLENGER, third, actor="carol")
        registry.promote(NAME, actor="carol")  # -> the third version
        assert registry.current_versions(NAME)[PREVIOUS_CHAMPION] == reg.challenger
        assert registry.rollback(NAME, actor="carol").new_version == reg.challenger
        assert registry.current_versions(NAME)[PREVIOUS_CHAMPION] == reg.champion
        assert registry.rollback(NAME, actor="carol").new_version == reg.champion
        assert registry.version_for(NAME, PREVIOUS_CHAMPION) is None
        with pytest.raises(RegistryError, match="nothing to roll back to"):
            registry.rollback(NAME, actor="carol")
    finally:
        registry.set_alias(NAME, CHAMPION, reg.champion, actor="carol")
        registry.set_alias(NAME, CHALLENGER, reg.challenger, actor="carol")


def test_promote_needs_a_challenger_that_is_not_champion(reg: Registered) -> None:
    registry = reg.registry
    registry.set_alias(NAME, CHALLENGER, reg.champion, actor="dave")
    try:
        with pytest.raises(RegistryError, match="already champion"):
            registry.promote(NAME, actor="dave")
    finally:
        registry.set_alias(NAME, CHALLENGER, reg.challenger, actor="dave")
    with pytest.raises(RegistryError):
        registry.set_alias(NAME, CHALLENGER, "999", actor="dave")
    assert registry.current_versions("no-such-model") == {}
    with pytest.raises(RegistryError, match="nothing to promote"):
        registry.promote("no-such-model", actor="dave")


# -- fetch and the local cache ----------------------------------------------------------------


def test_fetch_downloads_once_per_version(reg: Registered, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = reg.registry.fetch(NAME, CHALLENGER, cache)
    assert (first.version, first.downloaded, first.offline) == (reg.challenger, True, False)
    assert first.path == cache / NAME / reg.challenger
    _, meta = load_bundle(first.path)
    assert (meta.name, meta.version) == (NAME, reg.challenger)
    stamp = (first.path / MODEL_FILE).stat()

    second = reg.registry.fetch(NAME, CHALLENGER, cache)
    assert (second.path, second.downloaded) == (first.path, False)
    again = (second.path / MODEL_FILE).stat()
    assert (again.st_ino, again.st_mtime_ns) == (stamp.st_ino, stamp.st_mtime_ns)
    assert {p.name for p in (cache / NAME).iterdir()} == {"aliases.json", reg.challenger}
    assert reg.registry.cached_versions(NAME, cache) == {CHALLENGER: reg.challenger}


@pytest.mark.parametrize("outage", ["server-down", "database-gone"])
def test_unavailable_registry_serves_the_cached_version_and_says_so(
    reg: Registered, tmp_path: Path, caplog: pytest.LogCaptureFixture, outage: str
) -> None:
    cache = tmp_path / "cache"
    warm = reg.registry.fetch(NAME, CHAMPION, cache)
    if outage == "server-down":
        down = ModelRegistry(
            tracking_uri=f"http://127.0.0.1:{_closed_port()}", cache_dir=cache, probe_timeout_s=1
        )
    else:  # a home whose registry database was deleted
        down = ModelRegistry.open(tmp_path / "empty-home", cache_dir=cache)

    with caplog.at_level(logging.WARNING, logger="connectors.model_registry"):
        served = down.fetch(NAME, CHAMPION)
    assert (served.version, served.path, served.offline) == (reg.champion, warm.path, True)
    assert not served.downloaded
    assert served.reason
    assert any("serving" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)

    with pytest.raises(RegistryUnavailable):
        down.fetch(NAME, CHALLENGER)  # never cached: nothing to fall back on
    with pytest.raises(RegistryUnavailable):
        down.current_versions(NAME)


def test_fetch_refuses_a_corrupt_version_and_caches_nothing(
    reg: Registered, tmp_path: Path
) -> None:
    _, meta = load_bundle(reg.registry.fetch(NAME, CHAMPION).path)
    broken = reg.registry.log_and_register(
        b"not an onnx model", meta, registered_name=NAME, actor="eve", validate=False
    ).model_version
    reg.registry.set_alias(NAME, "broken", broken, actor="eve")
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match="cannot load"):
        reg.registry.fetch(NAME, "broken", cache)
    assert not (cache / NAME / broken).exists()
    assert [p.name for p in (cache / NAME).iterdir()] == []
    with pytest.raises(RegistryError, match="not set"):
        reg.registry.fetch(NAME, "no-such-alias", cache)


# -- the user's own ONNX files ----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated", "fewer-features"])
def test_register_onnx_file_refuses_a_model_that_does_not_load(
    reg: Registered, tmp_path: Path, damage: str
) -> None:
    source = reg.registry.fetch(NAME, CHAMPION).path
    target = tmp_path / "bundle"
    shutil.copytree(source, target)
    onnx_bytes = (target / MODEL_FILE).read_bytes()
    if damage == "fewer-features":
        (target / "bundle.json").unlink()
    elif damage == "garbage":
        (target / MODEL_FILE).write_bytes(b"\x00garbage" * 64)
    elif damage == "truncated":
        (target / MODEL_FILE).write_bytes(onnx_bytes[: len(onnx_bytes) // 2])
    count = len(reg.registry.list_versions(NAME))
    if damage == "fewer-features":
        with pytest.raises(SignatureMismatch):
            reg.registry.register_onnx_file(
                target / MODEL_FILE,
                registered_name=NAME,
                actor="frank",
                feature_names=[f"f{i}" for i in range(1, 9)],
            )
    else:
        with pytest.raises(ModelError):
            reg.registry.register_onnx_file(
                target / MODEL_FILE, registered_name=NAME, actor="frank"
            )
    assert len(reg.registry.list_versions(NAME)) == count


def test_register_a_bare_onnx_file_without_profile(reg: Registered, tmp_path: Path) -> None:
    bare = tmp_path / "mine.onnx"
    shutil.copy(reg.registry.fetch(NAME, CHAMPION).path / MODEL_FILE, bare)
    with pytest.raises(ConfigError, match="feature order"):
        reg.registry.register_onnx_file(bare, registered_name=NAME, actor="gina")

    names = [f"f{i}" for i in range(1, 10)]
    event = reg.registry.register_onnx_file(
        bare, registered_name=NAME, actor="gina", feature_names=names
    )
    info = reg.registry.describe(NAME, event.model_version)
    assert info.tags["streamscore.profile"] == "absent"
    assert info.tags["dataset.sha256"] == "unknown"
    assert "No reference profile" in reg.registry.model_card(NAME, event.model_version)

    reg.registry.set_alias(NAME, "imported", event.model_version, actor="gina")
    _, meta = load_bundle(reg.registry.fetch(NAME, "imported", tmp_path / "cache").path)
    assert (meta.feature_names, meta.classes, meta.profile.features) == (names, ["0", "1"], [])
    assert meta.task == "classification"


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_lists_describes_and_reports_refusals(reg: Registered) -> None:
    runner = CliRunner()
    common = ["--home", str(reg.home), "--name", NAME]
    listed = runner.invoke(app, ["list", *common])
    assert listed.exit_code == 0, listed.output
    assert "champion" in listed.output and "challenger" in listed.output

    described = runner.invoke(app, ["describe", *common, "--alias", CHALLENGER, "--card"])
    assert described.exit_code == 0, described.output
    assert "RandomForestClassifier" in described.output
    assert "Intended use" in described.output

    refused = runner.invoke(app, ["rollback", *common, "--actor", "cli"])
    assert refused.exit_code == 1
    assert "nothing to roll back to" in " ".join(refused.output.split())


def test_cli_warns_about_a_missing_profile_and_builds_one_from_parquet(
    reg: Registered, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    bare = tmp_path / "mine.onnx"
    shutil.copy(reg.registry.fetch(NAME, CHAMPION).path / MODEL_FILE, bare)
    names = [f"f{i}" for i in range(1, 10)]
    common = ["--home", str(reg.home), "--name", NAME, "--features", ",".join(names)]
    runner = CliRunner()
    plain = runner.invoke(app, ["register", str(bare), *common, "--actor", "t"])
    assert plain.exit_code == 0, plain.output
    assert "no reference profile" in " ".join(plain.output.split())

    data = shuttle()
    rows = tmp_path / "train.parquet"
    pq.write_table(pa.table({n: data.X[:500, i] for i, n in enumerate(names)}), rows)
    profiled = runner.invoke(
        app, ["register", str(bare), *common, "--reference-parquet", str(rows), "--actor", "t"]
    )
    assert profiled.exit_code == 0, profiled.output
    assert "no reference profile" not in " ".join(profiled.output.split())
    latest = max(reg.registry.list_versions(NAME), key=lambda v: int(v.version))
    assert latest.tags["streamscore.profile"] == "present"
    described = runner.invoke(app, ["describe", latest.version, "--home", str(reg.home),
                                    "--name", NAME])  # fmt: skip
    assert "no reference profile" not in " ".join(described.output.split())
