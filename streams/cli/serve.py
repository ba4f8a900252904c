"""``streamscore serve``: the HTTP door, its API keys (``serve keys ...``) and ``bench-http``.

Mounted by :mod:`streams.cli.main`::

    app.add_typer(serve_app, name="serve")
    app.command("bench-http")(bench_http)

``streamscore serve`` alone runs the server; ``streamscore serve keys add NAME --role
operator`` prints a new key once and stores only its hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from schemas.settings import Settings
from streams.cli.common import JsonFlag, new_app, print_json, settings_of

serve_app = new_app(
    help="Serve the models over HTTP (Open Inference Protocol v2, /v1/score, model ops).",
    invoke_without_command=True,
    no_args_is_help=False,
)
keys_app = new_app(help="API keys of the HTTP door: stored hashed, printed once.")
serve_app.add_typer(keys_app, name="keys")
console = Console()


@serve_app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on (serve.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (serve.port; 0 = any free).")] = None,
    batching: Annotated[
        bool | None,
        typer.Option("--batching/--no-batching", help="Dynamic batching (serve.batching)."),
    ] = None,
    max_batch: Annotated[
        int | None, typer.Option(help="Rows per coalesced model call (serve.max_batch).")
    ] = None,
    max_queue_delay_ms: Annotated[
        float | None,
        typer.Option(help="How long a batch waits for more requests (serve.max_queue_delay_ms)."),
    ] = None,
) -> None:
    """Run the HTTP server until Ctrl-C / SIGTERM; OpenAPI docs at /docs."""
    if ctx.invoked_subcommand is not None:
        return
    from streams.serve.server import HttpServer

    flags = {
        "host": host,
        "port": port,
        "batching": batching,
        "max_batch": max_batch,
        "max_queue_delay_ms": max_queue_delay_ms,
    }
    settings = settings_of(ctx, serve={k: v for k, v in flags.items() if v is not None})
    server = HttpServer(settings)
    Console(stderr=True).print(f"streamscore serve: {server.url} (docs: {server.url}/docs)")
    server.run()


def _keys_file(settings: Settings, keys_file: Path | None) -> Path:
    from streams.serve.keys import default_keys_file

    return keys_file or settings.serve.keys_file or default_keys_file(settings.home)


KeysFile = Annotated[
    Path | None,
    typer.Option(
        "--keys-file", help="Keys file (default: serve.keys_file, <home>/serve-keys.json)."
    ),
]


@keys_app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who uses the key (the actor in the audit trail).")],
    role: Annotated[str, typer.Option(help="reader or operator.")] = "reader",
    keys_file: KeysFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a key: printed once here, only its salted hash is stored."""
    from streams.serve.keys import add_key

    path = _keys_file(settings_of(ctx), keys_file)
    key, entry = add_key(path, name, role)
    if as_json:
        print_json({"name": entry.name, "role": entry.role, "id": entry.id, "key": key,
                    "keys_file": str(path)})  # fmt: skip
        return
    console.print(f"key for {entry.name} ({entry.role}), stored hashed in {path}:")
    console.print(key, soft_wrap=True, highlight=False)
    console.print("It is shown only now: keep it somewhere safe.")


@keys_app.command("list")
def list_keys(ctx: typer.Context, keys_file: KeysFile = None, as_json: JsonFlag = False) -> None:
    """The keys of the file: name, role, id, created (never a key)."""
    from streams.serve.keys import read_keys_file

    path = _keys_file(settings_of(ctx), keys_file)
    entries = read_keys_file(path)
    rows: list[dict[str, Any]] = [
        {"name": e.name, "role": e.role, "id": e.id, "created_at": e.created_at} for e in entries
    ]
    if as_json:
        print_json({"keys_file": str(path), "keys": rows})
        return
    table = Table(title=f"API keys ({path})")
    for column in ("name", "role", "id", "created_at"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("name", "role", "id", "created_at")))
    console.print(table)


@keys_app.command("revoke")
def revoke(ctx: typer.Context, name: str, keys_file: KeysFile = None) -> None:
    """Remove a key; a running server refuses it within a second (no restart)."""
    from streams.serve.keys import revoke_key

    path = _keys_file(settings_of(ctx), keys_file)
    entry = revoke_key(path, name)
    console.print(f"revoked {entry.name} ({entry.role}, id {entry.id}) in {path}")


def bench_http(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="Length of each measured run.")] = 5.0,
    clients: Annotated[str, typer.Option(help="Concurrent clients, comma-separated.")] = "1,16,64",
    rows: Annotated[int, typer.Option(help="Rows per request of the batched-rows run.")] = 256,
    door: Annotated[str, typer.Option(help="infer (OIP tensors) or score (/v1/score).")] = "infer",
    markdown_path: Annotated[
        Path | None, typer.Option("--markdown", help="Write the table (markdown) here.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Requests/s and p50/p99 of the HTTP door with dynamic batching on and off."""
    from schemas.errors import ConfigError
    from streams.serve.bench import format_table, run_http_bench

    if door not in ("infer", "score"):
        raise ConfigError(f"--door {door!r}: use infer or score")
    try:
        levels = [int(c) for c in clients.split(",") if c.strip()]
    except ValueError as exc:
        raise ConfigError(f"--clients {clients!r}: give numbers like 1,16,64") from exc
    result = run_http_bench(
        settings_of(ctx), seconds=seconds, clients=levels, rows=rows, door=door,
        config=ctx.find_root().params.get("config"),
    )  # fmt: skip
    table = format_table(result)
    if markdown_path is not None:
        markdown_path.write_text(table + "\n", encoding="utf-8")
    if as_json:
        print_json(result)
    else:
        Console().print(table, highlight=False, soft_wrap=True)
