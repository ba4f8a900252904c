"""``streamscore models ...``: train, register, list, describe, promote and roll back models.

Each command opens the registry from its options, calls one plain function
that does the work and returns the lifecycle events it caused, and hands them
to :func:`report_events` (a table on the terminal; the same events are the
records for ``sensor.audit``). Mount with ``app.add_typer(cli_models.app, name="models")``.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from models.profile import NO_PROFILE_WARNING, read_reference_rows
from models.roles import CHALLENGER, CHAMPION
from schemas.errors import ConfigError
from schemas.settings import Settings
from streams.cli.common import new_app, settings_of

if TYPE_CHECKING:
    from connectors.model_registry import LifecycleEvent, ModelRegistry, VersionInfo

app = new_app(help="Train, register, promote and roll back models (MLflow tracking and registry).")
console = Console()

Home = Annotated[
    Path | None,
    typer.Option(
        help="Embedded home: sqlite registry, artifacts and the model cache "
        "(default: the settings' home, .streamscore)."
    ),
]
TrackingUri = Annotated[
    str | None,
    typer.Option(help="MLflow tracking server URI; default: the embedded sqlite store in --home."),
]
RegistryUri = Annotated[
    str | None, typer.Option(help="MLflow registry URI; default: the tracking URI.")
]
Experiment = Annotated[
    str | None,
    typer.Option(help="MLflow experiment of the training runs (default: registry.experiment)."),
]
Name = Annotated[
    str | None,
    typer.Option("--name", "-n", help="Registered model name (default: registry.model_name)."),
]
Actor = Annotated[
    str | None, typer.Option(help="Who acts, for the audit trail; default: user@host.")
]

HOME_DEFAULT: Path | None = None


# -- the work, one plain function per action --------------------------------------------------


def open_registry(
    settings: Settings,
    home: Path | None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    experiment: str | None = None,
) -> ModelRegistry:
    """The registry named by the flags, else by the settings (streamscore.toml, STREAMSCORE_*)."""
    from connectors.model_registry import ModelRegistry

    r = settings.registry
    return ModelRegistry.open(
        home or settings.home,
        tracking_uri=tracking_uri or r.tracking_uri,
        registry_uri=registry_uri or r.registry_uri,
        experiment=experiment or r.experiment,
        cache_dir=r.cache_dir,
    )


def _opened(
    ctx: typer.Context,
    name: str | None,
    home: Path | None,
    tracking_uri: str | None,
    registry_uri: str | None,
    experiment: str | None = None,
) -> tuple[Settings, ModelRegistry, str]:
    """The invocation's settings, the registry its flags name, and the model name."""
    settings = settings_of(ctx)
    registry = open_registry(settings, home, tracking_uri, registry_uri, experiment)
    return settings, registry, name or settings.registry.model_name


def publish_audit(settings: Settings, events: Sequence[LifecycleEvent]) -> str | None:
    """Put the lifecycle events on the audit topic; returns why not, if it could not."""
    from connectors.kafka import Producer
    from connectors.kafka_admin import Admin
    from connectors.schema_registry import topic_serde

    if not Admin(settings.kafka, quiet=True).reachable(timeout=3.0):
        return f"Kafka at {settings.kafka.bootstrap_servers} is unreachable"
    serde = topic_serde(settings, "audit")
    producer = Producer(settings.kafka, client_id=f"streamscore-cli-{socket.gethostname()}")
    for event in events:
        record = event.audit_record()
        producer.produce(settings.topics.audit, serde.encode(record), event.model_name.encode())
    producer.flush(15.0)
    return None


def train_models(registry: ModelRegistry, name: str, actor: str) -> list[LifecycleEvent]:
    """Train, log and register the reference champion and challenger as versions of ``name``.

    The challenger alias moves to the new challenger version; the champion alias
    is set only when there is none yet (taking over the stream is ``promote``'s job).
    """
    from models.datasets import shuttle
    from models.train import REFERENCE_MODELS, split, train_reference

    _, X_test, _, y_test = split(shuttle())
    events: list[LifecycleEvent] = []
    registered: dict[str, str] = {}
    for role in REFERENCE_MODELS:
        with console.status(f"training the reference {role} ..."):
            onnx_bytes, meta, estimator = train_reference(role)
        with console.status(f"logging and registering {meta.name} ..."):
            event = registry.log_and_register(
                onnx_bytes,
                meta,
                registered_name=name,
                actor=actor,
                estimator=estimator,
                X_test=X_test,
                y_test=y_test,
                tags={"streamscore.reference_role": role},
            )
        events.append(event)
        registered[role] = event.model_version
    if registry.version_for(name, CHAMPION) is None:
        events.append(registry.set_alias(name, CHAMPION, registered[CHAMPION], actor=actor))
    events.append(registry.set_alias(name, CHALLENGER, registered[CHALLENGER], actor=actor))
    return events


def register_model(
    registry: ModelRegistry,
    path: Path,
    name: str,
    actor: str,
    *,
    features: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    reference_csv: Path | None = None,
    alias: str | None = None,
    description: str = "",
) -> list[LifecycleEvent]:
    """Register a user's ONNX file (or bundle folder), then optionally point ``alias`` at it."""
    reference = None
    if reference_csv is not None:
        header, reference = read_reference_rows(reference_csv, features)
        features = features or header
    events = [
        registry.register_onnx_file(
            path,
            registered_name=name,
            actor=actor,
            feature_names=features,
            classes=classes,
            reference=reference,
            description=description,
        )
    ]
    version = events[0].model_version
    if registry.describe(name, version).tags.get("streamscore.profile") == "absent":
        console.print(f"[yellow]warning:[/] {name} v{version}: {NO_PROFILE_WARNING}")
    if alias:
        events.append(registry.set_alias(name, alias, events[0].model_version, actor=actor))
    return events


def report_events(settings: Settings, events: Sequence[LifecycleEvent]) -> None:
    """Show lifecycle events (these are also the ``sensor.audit`` records)."""
    table = Table(title="lifecycle events")
    for column in ("action", "model", "version", "details", "actor", "at"):
        table.add_column(column)
    for e in events:
        details = ", ".join(
            f"{k}={v}"
            for k, v in e.details.items()
            if k not in ("onnx_sha256", "dataset_sha256", "origin")
        )
        table.add_row(
            e.action, e.model_name, e.model_version, details, e.actor, _when(e.occurred_at)
        )
    console.print(table)
    if not events:
        return
    problem = publish_audit(settings, events)
    if problem is None:
        console.print(f"audit: {len(events)} event(s) published to the audit topic")
    else:
        console.print(f"[yellow]warning:[/yellow] audit events not published: {problem}")


# -- commands ---------------------------------------------------------------------------------


@app.command()
def train(
    ctx: typer.Context,
    home: Home = HOME_DEFAULT,
    tracking_uri: TrackingUri = None,
    registry_uri: RegistryUri = None,
    experiment: Experiment = None,
    name: Name = None,
    actor: Actor = None,
) -> None:
    """Train the reference champion and challenger, log them to MLflow and register them."""
    settings, registry, name = _opened(ctx, name, home, tracking_uri, registry_uri, experiment)
    report_events(settings, train_models(registry, name, actor or default_actor()))


@app.command()
def register(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="An .onnx file, or a bundle folder.")],
    home: Home = HOME_DEFAULT,
    tracking_uri: TrackingUri = None,
    registry_uri: RegistryUri = None,
    experiment: Experiment = None,
    name: Name = None,
    features: Annotated[
        str | None, typer.Option(help="Feature order, comma-separated (if not in bundle.json).")
    ] = None,
    classes: Annotated[
        str | None, typer.Option(help="Class labels in probability-column order, comma-separated.")
    ] = None,
    reference_csv: Annotated[
        Path | None,
        typer.Option(help="Training rows (CSV with header) to build the reference profile."),
    ] = None,
    reference_parquet: Annotated[
        Path | None,
        typer.Option(help="Training rows (Parquet) to build the reference profile."),
    ] = None,
    alias: Annotated[
        str | None, typer.Option(help="Point this alias at the new version, e.g. challenger.")
    ] = None,
    description: Annotated[str, typer.Option(help="Model version description.")] = "",
    actor: Actor = None,
) -> None:
    """Register your own ONNX model as a new version (validated before it is registered)."""
    settings, registry, name = _opened(ctx, name, home, tracking_uri, registry_uri, experiment)
    events = register_model(
        registry,
        path,
        name,
        actor or default_actor(),
        features=_split(features),
        classes=_split(classes),
        reference_csv=reference_csv or reference_parquet,
        alias=alias,
        description=description,
    )
    report_events(settings, events)


@app.command("list")
def list_(
    ctx: typer.Context,
    home: Home = HOME_DEFAULT,
    tracking_uri: TrackingUri = None,
    registry_uri: RegistryUri = None,
    name: Name = None,
) -> None:
    """List the versions of a registered model with their aliases and offline metrics."""
    _, registry, name = _opened(ctx, name, home, tracking_uri, registry_uri)
    versions = registry.list_versions(name)
    if not versions:
        console.print(f"no versions of {name!r} yet: run `streamscore models train`")
        return
    table = Table(title=f"{name}: versions")
    for column in ("version", "aliases", "algorithm", "data sha256", "metrics", "created"):
        table.add_column(column)
    for v in versions:
        table.add_row(
            v.version,
            ", ".join(v.aliases),
            v.tags.get("streamscore.algorithm", ""),
            v.tags.get("dataset.sha256", "unknown")[:12],
            _headline_metrics(v),
            _when(v.created_at),
        )
    console.print(table)


@app.command()
def describe(
    ctx: typer.Context,
    version: Annotated[str | None, typer.Argument(help="Version; default: --alias.")] = None,
    alias: Annotated[str, typer.Option(help="Alias to describe when no version is given.")] = (
        CHAMPION
    ),
    home: Home = HOME_DEFAULT,
    tracking_uri: TrackingUri = None,
    registry_uri: RegistryUri = None,
    name: Name = None,
    card: Annotated[bool, typer.Option(help="Also print the model card.")] = False,
) -> None:
    """Show one version: aliases, lineage, parameters, metrics and run artifacts."""
    _, registry, name = _opened(ctx, name, home, tracking_uri, registry_uri)
    chosen = version or registry.version_for(name, alias)
    if chosen is None:
        raise ConfigError(f"{name} has no alias {alias!r}; give a version")
    info = registry.describe(name, chosen)
    card_text = registry.model_card(name, chosen) if card else None
    table = Table(title=f"{name} v{info.version}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = {
        "aliases": ", ".join(info.aliases) or "-",
        "created": _when(info.created_at),
        "description": info.description or "-",
        "run": info.run_id,
        "source": info.source,
        **{f"tag {k}": v for k, v in sorted(info.tags.items())},
        **{f"param {k}": v for k, v in sorted(info.params.items())},
        **{f"metric {k}": f"{v:.4f}" for k, v in sorted(info.metrics.items())},
        "artifacts": ", ".join(info.artifacts),
    }
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)
    if info.tags.get("streamscore.profile") == "absent":
        console.print(f"[yellow]warning:[/] {NO_PROFILE_WARNING}")
    if card_text is not None:
        console.print(Markdown(card_text))


@app.command()
def promote(
    ctx: typer.Context,
    home: Home = HOME_DEFAULT,
    tracking_uri: TrackingUri = None,
    registry_uri: RegistryUri = None,
    name: Name = None,
    actor: Actor = None,
) -> None:
    """Move the champion alias to the challenger's version (the old one is remembered)."""
    settings, registry, name = _opened(ctx, name, home, tracking_uri, registry_uri)
    report_events(settings, [registry.promote(name, actor=actor or default_actor())])


@app.command()
def rollback(
    ctx: typer.Context,
    home: Home = HOME_DEFAULT,
    tracking_uri: TrackingUri = None,
    registry_uri: RegistryUri = None,
    name: Name = None,
    actor: Actor = None,
) -> None:
    """Restore the previous champion."""
    settings, registry, name = _opened(ctx, name, home, tracking_uri, registry_uri)
    report_events(settings, [registry.rollback(name, actor=actor or default_actor())])


# -- helpers ----------------------------------------------------------------------------------


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _when(epoch_ms: int) -> str:
    if not epoch_ms:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _headline_metrics(v: VersionInfo) -> str:
    keys = ("f1", "roc_auc") if "f1" in v.metrics else ("rmse", "r2")
    return ", ".join(f"{k} {v.metrics[k]:.4f}" for k in keys if k in v.metrics) or "-"
