"""The ``cachedembed`` command line: embed files through the cache, and inspect and manage caches."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .keys import Role

CACHE_OPTION = click.option(
    "--cache",
    "cache_url",
    envvar="CACHEDEMBED_URL",
    default=None,
    metavar="URL",
    help="Cache URL (sqlite:///path.db, diskcache:///dir, postgresql+psycopg://..., memory://). "
    "Default: $CACHEDEMBED_URL, else a SQLite file in the user cache folder.",
)


class _Group(click.Group):
    """Turns cachedembed's own errors into one clean ``Error: ...`` line (exit 1), not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from .errors import CachedEmbedError

        try:
            return super().invoke(ctx)
        except CachedEmbedError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cachedembed")
def main() -> None:
    """A persistent cache for embeddings: pay for each text once."""


def _read_texts(path: str, field: str | None) -> list[str]:
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    with stream:
        if field is not None or path.endswith(".jsonl"):
            key = field or "text"
            texts = []
            for n, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get(key), str):
                    raise click.UsageError(
                        f"{path}:{n}: no string field {key!r} (choose one with --field)"
                    )
                texts.append(record[key])
            return texts
        return [line.rstrip("\n").rstrip("\r") for line in stream if line.strip()]


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--model",
    "-m",
    default="default",
    show_default=True,
    help="provider:model spec; see `cachedembed providers`.",
)
@CACHE_OPTION
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False),
    help="Write vectors here: .npy (float32 matrix) or .jsonl.",
)
@click.option("--field", help="For .jsonl input: the field holding the text (default: text).")
@click.option("--query", is_flag=True, help="Embed as queries instead of documents.")
@click.option(
    "--store-text",
    is_flag=True,
    help="Keep the texts in the cache, so `reembed` and exports can use them.",
)
@click.option(
    "--batch-size",
    default=256,
    show_default=True,
    help="Texts per cache round trip (progress granularity).",
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."
)
def embed(
    file: str,
    model: str,
    cache_url: str | None,
    out: str | None,
    field: str | None,
    query: bool,
    store_text: bool,
    batch_size: int,
    progress: bool | None,
) -> None:
    """Embed FILE (one text per line, or .jsonl) through the cache; print hits and misses."""
    import numpy as np
    from tqdm import tqdm

    from .embedding_functions import from_spec
    from .usage import UsageDelta
    from .wrapper import Cached

    texts = _read_texts(file, field)
    if not texts:
        raise click.UsageError(f"{file} contains no texts")
    ef = Cached(from_spec(model), cache_url, store_text=store_text)
    role: Role = "query" if query else "document"
    # This run's counters come from its own calls: on a shared cache, the difference of
    # two stats() readings would also count what other writers did meanwhile.
    run = UsageDelta()
    parts = []
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=len(texts), unit="text", disable=not show, file=sys.stderr) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            done = ef.embed_with_usage(chunk, role)
            run.add(done.usage)
            parts.append(done.vectors)
            bar.update(len(chunk))
    vectors = np.concatenate(parts)
    if out:
        if out.endswith(".jsonl"):
            with open(out, "w", encoding="utf-8") as fh:
                for vec in vectors:
                    fh.write(json.dumps(vec.tolist()) + "\n")
        else:
            np.save(out, vectors)
    click.echo(
        f"{len(texts)} texts, {vectors.shape[1]} dimensions: {run.hits} hits, {run.misses} misses"
        + (f" -> {out}" if out else "")
    )


def _parsed(parse: Callable[[str], int], value: str | None, option: str) -> int | None:
    """``parse(value)``, with a parse error reported as a bad ``option`` (exit 2)."""
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _since(value: str | None, option: str = "--since") -> int | None:
    from .usage import parse_days_ago

    return _parsed(parse_days_ago, value, option)


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
MODEL_FILTER = click.option(
    "--model",
    "-m",
    "model",
    metavar="SUBSTR",
    help="Only models whose provider/model contains SUBSTR.",
)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@main.command()
@CACHE_OPTION
@click.option(
    "--since",
    metavar="7d|2w|YYYY-MM-DD",
    help="Only usage from this UTC day on (7d = the last 7 days, today included).",
)
@MODEL_FILTER
@click.option(
    "--by",
    "by",
    type=click.Choice(["model", "day"]),
    default="model",
    show_default=True,
    help="One row per model, or one per UTC day with a bar chart of spent vs saved.",
)
@JSON_OPTION
def stats(
    cache_url: str | None, since: str | None, model: str | None, by: str, as_json: bool
) -> None:
    """Show what the cache saved, per model (from aggregated counters, never a scan)."""
    from .stats import render_days, render_table, report
    from .stores.sqlite_reader import open_reader

    # A SQLite cache is read with sqlite3 alone: no SQLAlchemy start-up for a report.
    data = report(open_reader(cache_url), since_day=_since(since), model=model, by_day=by == "day")
    if as_json:
        _echo_json(data)
    else:
        click.echo(render_days(data) if by == "day" else render_table(data))


@main.command()
@CACHE_OPTION
@MODEL_FILTER
@JSON_OPTION
def models(cache_url: str | None, model: str | None, as_json: bool) -> None:
    """List the cache's namespaces: model, parameters, role, dimension, size, first/last use."""
    from dataclasses import asdict

    from .manage import format_size, list_models
    from .stores import open_store

    store = open_store(cache_url)
    infos = list_models(store, model)
    if as_json:
        _echo_json([asdict(i) for i in infos])
        return
    click.echo(f"cache: {store.url}")
    if not infos:
        click.echo("no namespaces")
        return
    rows = [
        [
            "provider/model",
            "parameters",
            "role",
            "dim",
            "dtype",
            "entries",
            "size",
            "first use",
            "last use",
        ]
    ]
    for i in infos:
        params = ",".join(
            f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
            for k, v in sorted(i.parameters.items())
        )
        rows.append(
            [
                f"{i.provider}/{i.model}",
                params or "-",
                i.role,
                str(i.dim or "-"),
                i.dtype,
                f"{i.entries:,}",
                format_size(i.bytes),
                i.first_used or "-",
                i.last_used or "-",
            ]
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


main.add_command(
    click.Command("ls", params=models.params, callback=models.callback, help="Same as `models`."),
)


def _size(value: str | None) -> int | None:
    from .manage import parse_size

    return _parsed(parse_size, value, "--max-size")


@main.command()
@CACHE_OPTION
@click.option(
    "--older-than",
    metavar="30d|2w|YYYY-MM-DD",
    help="Remove entries not used within this window (last use, per UTC day).",
)
@MODEL_FILTER
@click.option(
    "--max-size",
    metavar="SIZE",
    help="Then remove least recently used entries until the vectors take at most SIZE (2GB, 500MiB).",
)
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@JSON_OPTION
def prune(
    cache_url: str | None,
    older_than: str | None,
    model: str | None,
    max_size: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Remove old or least recently used entries (usage history is kept)."""
    from dataclasses import asdict

    from .manage import format_size
    from .manage import prune as run_prune
    from .stores import open_store

    if older_than is None and max_size is None:
        raise click.UsageError("give --older-than and/or --max-size")
    if older_than is not None:
        _since(older_than, "--older-than")  # validate before touching the cache
    result = run_prune(
        open_store(cache_url),
        older_than=older_than,
        model=model,
        max_bytes=_size(max_size),
        dry_run=dry_run,
    )
    if as_json:
        _echo_json(
            {
                **asdict(result),
                "removed_entries": result.removed_entries,
                "removed_bytes": result.removed_bytes,
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    for n in result.namespaces:
        click.echo(
            f"{n.model} ({n.role}): {verb} {n.removed_entries:,} entries ({format_size(n.removed_bytes)}), "
            f"{n.kept_entries:,} left ({format_size(n.kept_bytes)})"
        )
    click.echo(
        f"total: {verb} {result.removed_entries:,} entries ({format_size(result.removed_bytes)}), "
        f"{format_size(result.kept_bytes)} left"
    )


@main.command()
@CACHE_OPTION
@click.argument("file", type=click.Path(dir_okay=False))
@MODEL_FILTER
def export(cache_url: str | None, file: str, model: str | None) -> None:
    """Write the cache to FILE (gzip'd JSON Lines) to move it to another machine or backend."""
    from .exchange import export_cache
    from .stores import open_store

    s = export_cache(open_store(cache_url), file, model=model)
    click.echo(
        f"exported {s.namespaces} namespaces, {s.entries:,} entries ({s.texts:,} with text), "
        f"{s.stats} stats rows -> {file}"
    )


@main.command("import")
@CACHE_OPTION
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--stats",
    "stats_mode",
    type=click.Choice(["new", "add", "none"]),
    default="new",
    show_default=True,
    help="Stats rows: import days the cache has none for (idempotent), add to existing counters, or skip.",
)
def import_(cache_url: str | None, file: str, stats_mode: str) -> None:
    """Load an export FILE into the cache (entries already present are kept as they are)."""
    from .exchange import import_cache
    from .stores import open_store

    s = import_cache(open_store(cache_url), file, stats=stats_mode)  # type: ignore[arg-type]
    click.echo(
        f"imported {s.namespaces} namespaces ({s.namespaces_created} new), {s.entries:,} entries "
        f"({s.entries_added:,} added, {s.entries_present:,} already present), {s.stats} stats rows "
        f"({s.stats_added} added, {s.stats_skipped} skipped)"
    )


@main.command()
@CACHE_OPTION
@MODEL_FILTER
@click.option(
    "--fix", is_flag=True, help="Delete the bad entries (their texts are re-embedded on next use)."
)
def verify(cache_url: str | None, model: str | None, fix: bool) -> None:
    """Check that every entry decodes to its namespace's dtype and dimension."""
    from .manage import verify as run_verify
    from .stores import open_store

    result = run_verify(open_store(cache_url), fix=fix, model=model)
    for bad in result.bad[:50]:
        click.echo(f"bad entry {bad.id} in {bad.model} ({bad.namespace[:8]}): {bad.reason}")
    if len(result.bad) > 50:
        click.echo(f"... and {len(result.bad) - 50} more")
    click.echo(
        f"checked {result.checked:,} entries: {len(result.bad)} bad"
        + (f", {result.removed} removed" if fix else "")
    )
    if result.bad and not fix:
        sys.exit(1)


@main.command()
@CACHE_OPTION
@MODEL_FILTER
@click.option(
    "--with",
    "with_model",
    required=True,
    metavar="SPEC",
    help="The new model, as for `embed --model` (provider:model).",
)
@click.option("--batch-size", default=256, show_default=True, help="Texts per cache round trip.")
def reembed(cache_url: str | None, model: str | None, with_model: str, batch_size: int) -> None:
    """Embed the texts kept by `embed --store-text` (store_text=True) with another model."""
    from .embedding_functions import from_spec
    from .manage import reembed as run_reembed
    from .stores import open_store

    r = run_reembed(
        open_store(cache_url), from_spec(with_model), model=model, batch_size=batch_size
    )
    click.echo(
        f"re-embedded {r.texts:,} texts from {r.namespaces} namespaces with {with_model}: "
        f"{r.misses:,} embedded, {r.hits:,} already cached; {r.without_text:,} entries had no stored text"
    )


@main.command()
@CACHE_OPTION
def migrate(cache_url: str | None) -> None:
    """Upgrade a SQL cache's schema to this version's (opening a cache also does it)."""
    from .manage import migrate as run_migrate

    before, after = run_migrate(cache_url)
    if after is None:
        click.echo("this cache has no schema (diskcache/memory): nothing to migrate")
    elif before == after:
        click.echo(f"schema revision {after}: already up to date")
    else:
        click.echo(f"schema revision {before or '(empty)'} -> {after}")


@main.command()
def providers() -> None:
    """List the providers --model accepts, with the options each takes."""
    from .embedding_functions import providers as all_providers

    for _name, cls in sorted(all_providers().items()):
        click.echo(f"{cls.spec_help()}")


@main.command()
@click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    required=True,
    metavar="[ALIAS=]PROVIDER:MODEL",
    help="A model to serve (repeatable); clients name it by ALIAS, else by MODEL. "
    "The first also answers TEI /embed.",
)
@CACHE_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0: any free one).")
@click.option(
    "--api-key",
    envvar="CACHEDEMBED_SERVER_API_KEY",
    default=None,
    help="Require 'Authorization: Bearer KEY' on every request. "
    "Default: $CACHEDEMBED_SERVER_API_KEY.",
)
@click.option(
    "--allow-public-without-key",
    is_flag=True,
    help="Allow binding a non-loopback address without --api-key (anyone reaching it spends your provider budget).",
)
@click.option(
    "--max-inputs",
    default=2048,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most texts per request (413 beyond).",
)
@click.option(
    "--max-body-bytes",
    default=16 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="Largest request body (413 beyond).",
)
def serve(
    models: tuple[str, ...], cache_url: str | None, api_key: str | None, **options: Any
) -> None:
    """Serve the OpenAI embeddings API and TEI /embed in front of cached providers."""
    from .server.serve import run

    run(list(models), cache_url, api_key=api_key or None, **options)


if __name__ == "__main__":  # pragma: no cover
    main()
