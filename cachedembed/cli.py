"""The ``cachedembed`` command line: embed files through the cache, and inspect and manage caches."""

from __future__ import annotations

import json
import sys
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
    batch_size: int,
    progress: bool | None,
) -> None:
    """Embed FILE (one text per line, or .jsonl) through the cache; print hits and misses."""
    import numpy as np
    from tqdm import tqdm

    from .embedding_functions import from_spec
    from .wrapper import Cached

    texts = _read_texts(file, field)
    if not texts:
        raise click.UsageError(f"{file} contains no texts")
    ef = Cached(from_spec(model), cache_url)
    role: Role = "query" if query else "document"
    before = ef.stats()
    parts = []
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=len(texts), unit="text", disable=not show, file=sys.stderr) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            parts.append(ef.embed(chunk, role))
            bar.update(len(chunk))
    vectors = np.concatenate(parts)
    after = ef.stats()
    if out:
        if out.endswith(".jsonl"):
            with open(out, "w", encoding="utf-8") as fh:
                for vec in vectors:
                    fh.write(json.dumps(vec.tolist()) + "\n")
        else:
            np.save(out, vectors)
    hits = after["hits"] - before["hits"]
    misses = after["misses"] - before["misses"]
    click.echo(
        f"{len(texts)} texts, {vectors.shape[1]} dimensions: {hits} hits, {misses} misses"
        + (f" -> {out}" if out else "")
    )


@main.command()
@CACHE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats(cache_url: str | None, as_json: bool) -> None:
    """Show what the cache saved, per model (from aggregated counters, never a scan)."""
    from .stats import report
    from .stores import open_store

    store = open_store(cache_url)
    data = report(store)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(_render_report(data))


def _render_report(data: dict[str, Any]) -> str:
    from .stats import render_table

    return render_table(data)


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
