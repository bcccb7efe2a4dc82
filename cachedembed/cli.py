"""The ``cachedembed`` command line: embed files through the cache, and inspect and manage caches."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import settings
from ._cliutil import CACHE_OPTION, JSON_OPTION, _echo_json, _fail, count
from ._printable import printable

if TYPE_CHECKING:
    import numpy as np

    from .keys import Role

_F = TypeVar("_F", bound=Callable[..., Any])


class _Group(click.Group):
    """Turns cachedembed's own errors into one clean ``Error: ...`` line (exit 1), not a traceback.

    The message is escaped: it may quote a model name or a string from an imported file.
    """

    def invoke(self, ctx: click.Context) -> Any:
        from .errors import CachedEmbedError

        try:
            return super().invoke(ctx)
        except CachedEmbedError as exc:
            raise click.ClickException(printable(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cachedembed")
def main() -> None:
    """A persistent cache for embeddings: pay for each text once."""


def _input_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) of a UTF-8 file or stdin; one-line errors otherwise."""
    try:
        stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise _fail(
            f"no such file: {path} (give the path of a text or .jsonl file, or - for stdin)"
        ) from None
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror or exc}") from None
    with stream:
        for n, raw in enumerate(stream, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _fail(
                    f"{path}:{n}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                    "convert the file, e.g. iconv -f latin1 -t utf-8"
                ) from None
            if n == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark is not part of the text
            yield n, line.rstrip("\n").rstrip("\r")


def _read_texts(path: str, field: str | None) -> tuple[list[str], list[int]]:
    """The texts of ``path`` and the numbers of the blank lines skipped.

    Blank lines are skipped, never embedded (providers reject empty texts), and the
    caller reports them: output rows follow the non-blank lines in order.
    """
    jsonl = field is not None or path.endswith(".jsonl")
    key = field or "text"
    texts: list[str] = []
    blank: list[int] = []
    for n, line in _input_lines(path):
        if not line.strip():
            blank.append(n)
        elif not jsonl:
            texts.append(line)
        else:
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise _fail(
                    f"{path}:{n}: not valid JSON ({exc}); each line must be one JSON object"
                ) from None
            if not isinstance(record, dict) or not isinstance(record.get(key), str):
                raise _fail(f"{path}:{n}: no string field {key!r} (choose one with --field)")
            texts.append(record[key])
    return texts, blank


def _blank_note(blank: list[int]) -> str:
    shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
    return (
        f"skipped {count(len(blank), 'blank line')} ({'line' if len(blank) == 1 else 'lines'} "
        f"{shown}): output rows follow the non-blank lines in order"
    )


def _check_out(out: str | None) -> None:
    if out is not None and not out.endswith((".npy", ".jsonl")):
        raise click.BadParameter(
            f"{out!r} must end in .npy (a float32 matrix) or .jsonl (one JSON array per line)",
            param_hint="--out",
        )


def _write_vectors(out: str, vectors: Any) -> None:
    import numpy as np

    if out.endswith(".jsonl"):
        with open(out, "w", encoding="utf-8") as fh:
            for vec in vectors:
                fh.write(json.dumps(vec.tolist()) + "\n")
    else:
        with open(out, "wb") as fh:  # np.save(path) would append .npy to any other name
            np.save(fh, vectors)


def _pacing_options(command: _F) -> _F:
    """--concurrency, --requests-per-minute and --tokens-per-minute: how fast misses go out."""
    rate = click.FloatRange(min=0, min_open=True)
    for option in (
        click.option(
            "--tokens-per-minute",
            type=rate,
            help="The provider's token rate limit, paced before sending (remote providers).",
        ),
        click.option(
            "--requests-per-minute",
            type=rate,
            help="The provider's request rate limit (remote providers; 429s also slow down).",
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(min=1),
            help="Provider requests at once for the misses "
            "(default: 4 for remote providers, 1 for local models).",
        ),
    ):
        command = option(command)
    return command


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
    type=click.IntRange(min=1),
    help="Texts per cache round trip (progress granularity).",
)
@_pacing_options
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."
)
@click.option(
    "--batch-api",
    is_flag=True,
    help="Send the misses through the provider's batch API (OpenAI: half price, within 24 h).",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="With --batch-api: wait for the jobs and collect them, or return once submitted.",
)
@click.option(
    "--poll-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="With --batch-api: first seconds between status checks (doubling up to 5 minutes).",
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
    concurrency: int | None,
    requests_per_minute: float | None,
    tokens_per_minute: float | None,
    progress: bool | None,
    batch_api: bool,
    wait: bool,
    poll_interval: float,
) -> None:
    """Embed FILE (one text per line, or .jsonl) through the cache; print hits and misses.

    Blank lines are skipped (and reported): the output's rows are the non-blank lines, in order.
    With --batch-api the misses go to the provider's batch API as recorded jobs; `cachedembed
    batch collect` finishes them later, from any machine sharing the cache.
    """
    from .embedding_functions import from_spec
    from .stores import default_url, normalize_url
    from .wrapper import Cached

    # Everything a user can get wrong is checked before the cache is opened (or created).
    _check_out(out)
    url = normalize_url(cache_url or default_url())
    texts, blank = _read_texts(file, field)
    if not texts:
        raise _fail(f"{file} contains no texts (only blank lines)" if blank else f"{file} is empty")
    ef = from_spec(
        model, requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute
    )
    if batch_api and not callable(getattr(ef, "batch_adapter", None)):
        raise _fail(
            f"--batch-api: {model} has no batch API support; use openai:MODEL or gemini:MODEL"
        )
    ef.check_available()
    cached = Cached(ef, url, store_text=store_text, concurrency=concurrency)
    role: Role = "query" if query else "document"
    if batch_api:
        from .batchcli import embed_via_batch

        if not embed_via_batch(cached, texts, role, wait=wait, poll=poll_interval):
            return
    show = sys.stderr.isatty() if progress is None else progress
    vectors, cold = _embed_in_steps(cached, texts, role, batch_size, show)
    hits, misses = cold.hits, cold.misses
    if out:
        _write_vectors(out, vectors)
    if blank:
        click.echo(_blank_note(blank), err=True)
    click.echo(
        f"{count(len(texts), 'text')}, {vectors.shape[1]} dimensions: "
        f"{count(hits, 'hit')}, {count(misses, 'miss', 'misses')}" + (f" -> {out}" if out else "")
    )
    if misses:
        click.echo(cold.summary(), err=True)


def _embed_in_steps(
    cached: Any, texts: list[str], role: Role, batch_size: int, show: bool
) -> tuple[np.ndarray, _ColdProgress]:
    """Embed ``texts`` a step at a time under a progress bar; the matrix and this run's counts."""
    import numpy as np
    from tqdm import tqdm

    parts = []
    cold = _ColdProgress(cached, role)
    # Enough texts per call for every concurrent request to carry a full provider batch.
    step = max(batch_size, cached.concurrency * getattr(cached.ef, "max_batch", 1))
    with tqdm(total=len(texts), unit="text", disable=not show, file=sys.stderr) as bar:
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            # This run's own counts: a shared cache's totals also move with other writers.
            result = cached.embed_with_usage(chunk, role)
            parts.append(result.vectors)
            cold.add(result)
            bar.update(len(chunk))
            if cold.misses:
                bar.set_postfix_str(cold.rates(), refresh=False)
    return np.concatenate(parts), cold


class _ColdProgress:
    """This run's cold part (the misses): rates for the progress bar, and the final line."""

    def __init__(self, cached: Any, role: Role) -> None:
        from .pricing import price_per_million

        identity = cached.identity(role)
        self.price = price_per_million(
            str(identity.get("provider", "")), str(identity.get("model", ""))
        )
        self.started = time.perf_counter()
        self.hits = self.misses = self.tokens = 0
        self.provider_seconds = 0.0

    def add(self, result: Any) -> None:
        self.hits += result.usage.hits
        self.misses += result.usage.misses
        self.tokens += result.usage.tokens_embedded
        self.provider_seconds += result.usage.provider_seconds

    def dollars(self) -> str:
        from .pricing import dollars

        cost = dollars(self.tokens, self.price)
        return "$?" if cost is None else f"${cost:.4f}"

    def rates(self) -> str:
        wall = max(time.perf_counter() - self.started, 1e-9)
        return f"{self.misses / wall:,.0f} texts/s, {self.tokens / wall:,.0f} tokens/s, {self.dollars()}"

    def summary(self) -> str:
        wall = time.perf_counter() - self.started
        return (
            f"cold: {count(self.misses, 'text')} in {wall:.1f}s wall, "
            f"{self.provider_seconds:.1f}s provider time, {count(self.tokens, 'token')}, {self.dollars()}"
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


MODEL_FILTER = click.option(
    "--model",
    "-m",
    "model",
    metavar="SUBSTR",
    help="Only models whose provider/model contains SUBSTR.",
)


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
    since_day = _since(since)  # validated before the cache is opened
    data = report(
        open_reader(cache_url, create=False), since_day=since_day, model=model, by_day=by == "day"
    )
    if as_json:
        _echo_json(data)
    else:
        click.echo(render_days(data) if by == "day" else render_table(data))


@main.command()
@CACHE_OPTION
@MODEL_FILTER
@JSON_OPTION
def models(cache_url: str | None, model: str | None, as_json: bool) -> None:
    """List the cache's namespaces: model, parameters, role, items (text or image), dimension, size, first/last use."""
    from dataclasses import asdict

    from .manage import format_size, list_models
    from .stores import open_store

    store = open_store(cache_url, create=False)
    infos = list_models(store, model)
    if as_json:
        _echo_json([asdict(i) for i in infos])
        return
    click.echo(printable(f"cache: {store.url}"))
    if not infos:
        click.echo("no namespaces")
        return
    rows = [
        [
            "provider/model",
            "parameters",
            "role",
            "items",
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
                printable(f"{i.provider}/{i.model}"),
                printable(params or "-"),
                printable(i.role),
                printable(i.kind),
                printable(i.dim or "-"),
                printable(i.dtype),
                f"{i.entries:,}",
                format_size(i.bytes),
                i.first_used or "-",
                i.last_used or "-",
            ]
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    _echo_damaged((i.provider, i.model, i.namespace, i.damaged) for i in infos)


def _echo_damaged(namespaces: Iterable[tuple[str, str, str, str | None]]) -> None:
    """One line per namespace whose stored record is damaged, with its two ways out."""
    for provider, model, key, problem in namespaces:
        if problem is not None:
            click.echo(
                f"damaged: {printable(f'{provider}/{model}')} ({key[:8]}): {printable(problem)}; "
                "repair it with `cachedembed verify --fix` or remove it with "
                "`cachedembed prune --model M --remove-namespaces`"
            )


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
@click.option(
    "--remove-namespaces",
    is_flag=True,
    help="Remove the --model namespaces outright (entries and record), a damaged one included.",
)
@click.option(
    "--with-stats",
    is_flag=True,
    help="With --remove-namespaces: remove their usage stats too (otherwise kept, and required).",
)
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@JSON_OPTION
def prune(
    cache_url: str | None,
    older_than: str | None,
    model: str | None,
    max_size: str | None,
    remove_namespaces: bool,
    with_stats: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Remove old or least recently used entries (usage history is kept), or whole namespaces."""
    from dataclasses import asdict

    from .manage import format_size
    from .manage import prune as run_prune
    from .stores import open_store

    if remove_namespaces == (older_than is not None or max_size is not None):
        raise click.UsageError("give --older-than and/or --max-size, or --remove-namespaces")
    if with_stats and not remove_namespaces:
        raise click.UsageError("--with-stats goes with --remove-namespaces (prune keeps history)")
    if older_than is not None:
        _since(older_than, "--older-than")  # validate before touching the cache
    result = run_prune(
        open_store(cache_url),
        older_than=older_than,
        model=model,
        max_bytes=_size(max_size),
        remove_namespaces=remove_namespaces,
        with_stats=with_stats,
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
        removed = f"{count(n.removed_entries, 'entry', 'entries')} ({format_size(n.removed_bytes)})"
        if n.removed_namespace:
            history = "its usage stats" if with_stats else "no usage stats"
            click.echo(
                f"{printable(n.model)} ({printable(n.role)}) {n.namespace[:8]}: {verb} the "
                f"namespace, {removed} and {history}"
            )
            continue
        click.echo(
            f"{printable(n.model)} ({printable(n.role)}): {verb} {removed}, "
            f"{n.kept_entries:,} left ({format_size(n.kept_bytes)})"
        )
    click.echo(
        f"total: {verb} {count(result.removed_entries, 'entry', 'entries')} "
        f"({format_size(result.removed_bytes)}), "
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

    s = export_cache(open_store(cache_url, create=False), file, model=model)
    click.echo(
        f"exported {count(s.namespaces, 'namespace')}, {count(s.entries, 'entry', 'entries')} "
        f"({s.texts:,} with text), {count(s.stats, 'stats row')} -> {file}"
        + (
            f"; left out {count(s.damaged, 'damaged entry', 'damaged entries')} "
            "(see `cachedembed verify`)"
            if s.damaged
            else ""
        )
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
@click.option(
    "--require-text",
    is_flag=True,
    help="Refuse entries without their text: only vectors whose id is proven by their text go in.",
)
def import_(cache_url: str | None, file: str, stats_mode: str, require_text: bool) -> None:
    """Load an export FILE into the cache: all of it or nothing (entries already present are kept).

    Importing a file means trusting whoever wrote it for the entries that carry no text.
    """
    from .exchange import check_export, import_cache
    from .stores import default_url, normalize_url, open_store

    check_export(file, require_text=require_text)  # before the cache is opened, or created
    url = normalize_url(cache_url or default_url())
    created = _new_local_cache(url)
    try:
        s = import_cache(
            open_store(url),
            file,
            stats=stats_mode,  # type: ignore[arg-type]
            require_text=require_text,
            checked=True,
        )
    except BaseException:
        if created is not None:
            _remove_cache(created)
        raise
    click.echo(
        f"imported {count(s.namespaces, 'namespace')} ({s.namespaces_created} new), "
        f"{count(s.entries, 'entry', 'entries')} ({s.entries_added:,} added, "
        f"{s.entries_present:,} already present), {count(s.stats, 'stats row')} "
        f"({s.stats_added} added, {s.stats_skipped} skipped)"
    )


def _new_local_cache(url: str) -> Path | None:
    """The file or folder ``url`` would create, if it does not exist yet (else ``None``)."""
    for scheme in ("sqlite:///", "diskcache://"):
        if url.startswith(scheme):
            path = Path(url[len(scheme) :])
            return None if path.exists() or not path.is_absolute() else path
    return None


def _remove_cache(path: Path) -> None:
    """Delete a cache that a failed command created, so a failure leaves nothing behind."""
    import shutil

    from .stores import close_all

    close_all()
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


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

    # Verifying (or fixing) a cache that does not exist must not create one.
    result = run_verify(open_store(cache_url, create=False), fix=fix, model=model)
    for bad in result.bad[:50]:
        click.echo(
            f"bad entry {bad.id} in {printable(bad.model)} ({bad.namespace[:8]}): {printable(bad.reason)}"
        )
    if len(result.bad) > 50:
        click.echo(f"... and {len(result.bad) - 50} more")
    for ns in result.damaged_namespaces:
        click.echo(
            f"damaged namespace {printable(ns.model)} ({ns.namespace[:8]}): {printable(ns.problem)}"
            f"; {'' if fix else 'verify --fix: '}{ns.repair}"
        )
    damaged = len(result.damaged_namespaces)
    click.echo(
        f"checked {count(result.checked, 'entry', 'entries')}: {len(result.bad)} bad"
        + (f", {result.removed} removed" if fix else "")
        + (
            f"; {count(damaged, 'damaged namespace')}" + (" repaired" if fix else "")
            if damaged
            else ""
        )
    )
    if (result.bad or damaged) and not fix:
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
@click.option(
    "--batch-size",
    default=256,
    show_default=True,
    type=click.IntRange(min=1),
    help="Texts per cache round trip.",
)
def reembed(cache_url: str | None, model: str | None, with_model: str, batch_size: int) -> None:
    """Embed the texts kept by `embed --store-text` (store_text=True) with another model."""
    from .embedding_functions import from_spec
    from .manage import reembed as run_reembed
    from .stores import open_store

    r = run_reembed(
        open_store(cache_url), from_spec(with_model), model=model, batch_size=batch_size
    )
    click.echo(
        f"re-embedded {count(r.texts, 'text')} from {count(r.namespaces, 'namespace')} with "
        f"{with_model}: {r.misses:,} embedded, {r.hits:,} already cached; "
        f"{count(r.without_text, 'entry', 'entries')} had no stored text"
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


def _add_batch_commands() -> None:
    from .batchcli import batch  # lazily: most commands never need the batch machinery

    main.add_command(batch)


_add_batch_commands()


@main.command()
def providers() -> None:
    """List the providers --model accepts, with the options each takes (PROVIDER:MODEL?name=value&...)."""
    from .embedding_functions import providers as all_providers

    for _name, cls in sorted(all_providers().items()):
        click.echo(cls.spec_syntax())


def _listening(port: int, key: settings.Setting, require: str) -> Callable[[_F], _F]:
    """``--cache``, ``--host``, ``--port`` and ``--api-key`` (default ``$KEY``) of a listening command."""

    def apply(command: _F) -> _F:
        options = (
            CACHE_OPTION,
            click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind."),
            click.option(
                "--port", default=port, show_default=True, type=int, help="Port (0: any free one)."
            ),
            click.option(
                "--api-key", envvar=key.name, default=None, help=f"{require} Default: ${key.name}."
            ),
        )
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def _positive_int(name: str, default: int, help: str) -> Callable[[_F], _F]:
    """A server limit option: a whole number of at least 1."""
    return click.option(
        name, default=default, show_default=True, type=click.IntRange(min=1), help=help
    )


def _positive_seconds(name: str, default: float, help: str) -> Callable[[_F], _F]:
    """A server timeout option: seconds, more than zero."""
    return click.option(
        name,
        default=default,
        show_default=True,
        type=click.FloatRange(min=0, min_open=True),
        help=help,
    )


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
@_listening(8000, settings.SERVER_API_KEY, "Require 'Authorization: Bearer KEY' on every request.")
@click.option(
    "--allow-public-without-key",
    is_flag=True,
    help="Allow binding a non-loopback address without --api-key (anyone reaching it spends your provider budget).",
)
@_positive_int("--max-inputs", 2048, "Most texts per request (413 beyond).")
@_positive_int("--max-body-bytes", 16 * 1024 * 1024, "Largest request body (413 beyond).")
@_positive_int(
    "--max-body-memory",
    256 * 1024 * 1024,
    "Most bytes of request bodies held at once across all requests; uploads beyond it wait.",
)
@_positive_int(
    "--max-connections", 512, "Most open connections; a new one evicts the oldest idle or slow one."
)
@_positive_seconds(
    "--header-timeout",
    10.0,
    "Seconds a request head may take from its first byte (then the connection is closed).",
)
@_positive_seconds(
    "--body-timeout", 60.0, "Seconds a request body may take after its head (then 408)."
)
@_positive_seconds(
    "--keep-alive-timeout", 5.0, "Seconds a connection may stay idle before (and between) requests."
)
@_pacing_options
def serve(
    models: tuple[str, ...],
    cache_url: str | None,
    api_key: str | None,
    max_connections: int,
    header_timeout: float,
    body_timeout: float,
    keep_alive_timeout: float,
    concurrency: int | None,
    requests_per_minute: float | None,
    tokens_per_minute: float | None,
    **options: Any,
) -> None:
    """Serve the OpenAI embeddings API and TEI /embed in front of cached providers.

    --concurrency and the rate limits apply to each --model on its own.
    """
    from .server.protocol import Limits
    from .server.routing import Pacing
    from .server.serve import run

    limits = Limits(header_timeout, body_timeout, keep_alive_timeout, max_connections)
    pacing = Pacing(concurrency, requests_per_minute, tokens_per_minute)
    run(list(models), cache_url, api_key=api_key or None, limits=limits, pacing=pacing, **options)


@main.command()
@_listening(
    8765,
    settings.DASHBOARD_API_KEY,
    "Require this key (login form, or 'Authorization: Bearer KEY').",
)
def dashboard(cache_url: str | None, host: str, port: int, api_key: str | None) -> None:
    """Serve a read-only web page of what the cache saved, at /dashboard (needs the server extra)."""
    from .server.serve import run_dashboard

    run_dashboard(cache_url, host=host, port=port, api_key=api_key or None)


if __name__ == "__main__":  # pragma: no cover
    main()
