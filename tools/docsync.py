"""Keep the shown outputs in README.md and docs/*.md true: run them, and rewrite or check them.

A ```` ```console ```` block is a script: each ``$ command`` line is run by ``bash`` and the
lines after it, up to the next ``$`` line, are what it printed (stdout and stderr, as a
user sees them). All console blocks of one page run in order in one scratch directory
holding a copy of ``examples/``, so a page can build a cache and then show its stats.
A ```` ```python ```` block preceded by ``<!-- file: NAME.py -->`` is written to that file
in the scratch directory first, so a console block can run it; every other Python block
is at least compiled. A block preceded by ``<!-- docsync: skip REASON -->`` is not run
(a command that needs a provider's API key or runs until stopped); say why in REASON.
``<!-- docsync: run COMMAND -->`` runs COMMAND at that point without showing it (to
prepare what the next block shows, e.g. a damaged entry for ``verify``); the scripts it
may call live in ``tools/docs_fixtures.py``.

    python tools/docsync.py            # rewrite every output block from a real run
    python tools/docsync.py --check    # exit 1 and show a diff where a page has drifted

Outputs are compared after masking what differs between honest runs (durations, dates,
timestamps, seconds in JSON, a vector's bytes in an export) and collapsing runs of spaces,
so column widths may move with a timing; everything else (hits, misses, tokens, dollars,
namespaces) must match.
The scratch path never appears in a page: it is replaced by a path relative to it.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
COMMAND_TIMEOUT = 300

_FENCE = re.compile(r"^```(\w*)\s*$")
_FILE_MARK = re.compile(r"^<!-- file: ([\w.\-/]+) -->$")
_SKIP_MARK = re.compile(r"^<!-- docsync: skip .+-->$")
_RUN_MARK = re.compile(r"^<!-- docsync: run (.+) -->$")
_VOLATILE = [
    (re.compile(r"\b\d+(\.\d+)?\s?(ms|µs|s|min|h)\b"), "<time>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "<date>"),
    (re.compile(r'"(exported|created|used|first_use|last_use)": ?\d+'), r'"\1": <ts>'),
    (re.compile(r'"(provider_seconds\w*|seconds\w*)": ?[\d.e\-]+'), r'"\1": <sec>'),
    # The real model's floats differ in their last bits between CPUs (other SIMD kernels).
    (re.compile(r'"vec": ?"[A-Za-z0-9+/=]*'), r'"vec": <vector>'),
    (re.compile(r"[█░]+"), "<bar>"),
    (re.compile(r"[ \t]+"), " "),
]


@dataclass
class Block:
    lang: str
    start: int
    """Index of the first line inside the fence."""
    end: int
    """Index of the closing fence."""
    file: str | None
    skip: bool


def blocks(lines: list[str]) -> Iterator[Block]:
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match and match.group(1):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```")
            before = lines[i - 1].strip() if i else ""
            mark = _FILE_MARK.match(before)
            skip = bool(_SKIP_MARK.match(before))
            yield Block(match.group(1), i + 1, end, mark.group(1) if mark else None, skip)
            i = end
        i += 1


def commands(body: list[str]) -> list[str]:
    return [line[2:] for line in body if line.startswith("$ ")]


def run(command: str, cwd: Path, env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    text = done.stdout.replace(str(cwd) + "/", "").replace(str(cwd), ".")
    return text.rstrip("\n").splitlines()


def environment(scratch: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(scratch / "home"),
        "LANG": "C.UTF-8",
        "COLUMNS": "200",
        "PYTHONPATH": str(ROOT),
        "TZ": "UTC",
    }
    # Extra settings a page needs (e.g. HF_HUB_OFFLINE for the machine without internet).
    env.update({k: v for k, v in os.environ.items() if k.startswith(("HF_", "CACHEDEMBED_DOCS_"))})
    return env


def render(page: Path) -> tuple[list[str], list[str]]:
    """The page as it is, and as its commands print it today."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out = list(lines)
    with tempfile.TemporaryDirectory(prefix="docsync-") as tmp:
        scratch = Path(tmp).resolve()
        shutil.copytree(ROOT / "examples", scratch / "examples")
        shutil.copytree(ROOT / "examples", scratch, dirs_exist_ok=True)
        (scratch / "home").mkdir()
        (scratch / "tools").symlink_to(ROOT / "tools")
        env = environment(scratch)
        shift = 0
        setups = {i: m.group(1) for i, line in enumerate(lines) if (m := _RUN_MARK.match(line))}
        for block in blocks(lines):
            for i in [i for i in setups if i < block.start]:
                run(setups.pop(i), scratch, env)
            body = lines[block.start : block.end]
            if block.lang == "python":
                source = "\n".join(body) + "\n"
                compile(source, f"{page.name}:{block.start + 1}", "exec")
                if block.file:
                    (scratch / block.file).write_text(source, encoding="utf-8")
            elif block.lang == "console" and commands(body) and not block.skip:
                fresh: list[str] = []
                for command in commands(body):
                    if fresh:
                        fresh.append("")
                    fresh += [f"$ {command}", *run(command, scratch, env)]
                out[block.start + shift : block.end + shift] = fresh
                shift += len(fresh) - len(body)
    return lines, out


def masked(lines: list[str]) -> list[str]:
    result = []
    for line in lines:
        for pattern, replacement in _VOLATILE:
            line = pattern.sub(replacement, line)
        result.append(line.rstrip())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail where a page has drifted")
    parser.add_argument("pages", nargs="*", default=PAGES)
    args = parser.parse_args(argv)
    drifted = 0
    for name in args.pages:
        page = ROOT / name
        before, after = render(page)
        if args.check:
            diff = list(
                difflib.unified_diff(masked(before), masked(after), name, "real run", lineterm="")
            )
            if diff:
                drifted += 1
                print("\n".join(diff))
        elif after != before:
            page.write_text("\n".join(after) + "\n", encoding="utf-8")
            print(f"updated {name}")
    if drifted:
        print(f"{drifted} page(s) drifted from a real run: run `make docs` and review the diff")
    return 1 if drifted else 0


if __name__ == "__main__":
    raise SystemExit(main())
