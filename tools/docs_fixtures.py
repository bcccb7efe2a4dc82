"""What the docs' examples start from, made the way a user's mistake or a damaged disk would.

Called by ``<!-- docsync: run ... -->`` lines (see ``tools/docsync.py``), in the scratch
directory of a page::

    python tools/docs_fixtures.py forge EXPORT OUT     # OUT: EXPORT with one entry's text changed
    python tools/docs_fixtures.py cut-vector DB.db     # shorten one stored vector to 1000 bytes
    python tools/docs_fixtures.py old-cache OUT.db     # a cache of schema revision 0001
"""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def forge(export: str, out: str) -> None:
    """Change the text of the first entry that has one, keeping its id, check and vector."""
    with gzip.open(export, "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    entry = next(r for r in records if r["type"] == "entry" and r.get("text"))
    entry["text"] = "a different text, claiming the same vector"
    with gzip.open(out, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in records)


def cut_vector(db: str) -> None:
    """Shorten the stored vector of the query entry with the smallest id (a torn write)."""
    with sqlite3.connect(db) as conn:
        ns = conn.execute(
            "SELECT id FROM namespaces WHERE role = 'query' ORDER BY id LIMIT 1"
        ).fetchone()[0]
        item = conn.execute("SELECT min(id) FROM entries WHERE ns = ?", (ns,)).fetchone()[0]
        conn.execute(
            "UPDATE entries SET vec = substr(vec, 1, 1000) WHERE ns = ? AND id = ?", (ns, item)
        )


def old_cache(out: str) -> None:
    shutil.copyfile(ROOT / "tests/reliability/fixtures/rev0001.db", out)


if __name__ == "__main__":
    commands = {"forge": forge, "cut-vector": cut_vector, "old-cache": old_cache}
    commands[sys.argv[1]](*sys.argv[2:])
