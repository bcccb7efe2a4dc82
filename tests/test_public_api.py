"""The declared public surface: what `cachedembed` exports, the supported modules, `py.typed`."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import cachedembed

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()
SUPPORTED = [
    "cachedembed.embedding_functions",
    "cachedembed.adapters",
    "cachedembed.stores",
    "cachedembed.manage",
    "cachedembed.exchange",
    "cachedembed.stats",
    "cachedembed.settings",
]


def _public_table() -> str:
    return ARCHITECTURE.split("## Public API", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("name", sorted(set(cachedembed.__all__) - {"__version__"}))
def test_every_exported_name_imports_and_has_a_docstring(name: str) -> None:
    obj = getattr(cachedembed, name)
    assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


@pytest.mark.parametrize("name", sorted(set(cachedembed.__all__) - {"__version__"}))
def test_every_exported_name_is_listed_in_the_architecture_page(name: str) -> None:
    assert f"`{name}`" in _public_table()


def test_every_error_class_is_exported() -> None:
    from cachedembed import errors
    from cachedembed.stores import outage

    classes = {
        n
        for module in (errors, outage)
        for n, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, cachedembed.CachedEmbedError)
    }
    assert classes <= set(cachedembed.__all__)


# Slow: needs a fresh interpreter (this one has imported everything already).
@pytest.mark.slow
def test_importing_cachedembed_leaves_the_heavy_modules_unloaded() -> None:
    code = (
        "import sys, cachedembed\n"
        "heavy = [m for m in ('numpy', 'sqlalchemy', 'httpx', 'redis', 'cachedembed.wrapper') "
        "if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", SUPPORTED)
def test_supported_modules_are_documented_and_declare_what_they_export(module: str) -> None:
    mod = importlib.import_module(module)
    assert f"`{module}`" in _public_table()
    assert mod.__all__, f"{module} declares no __all__"
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name} is declared but missing"


# Slow: builds a wheel with pip in a subprocess.
@pytest.mark.slow
def test_the_built_wheel_ships_py_typed(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, str(ROOT), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("cachedembed-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cachedembed/py.typed" in names
    assert any(re.fullmatch(r"cachedembed/settings\.py", n) for n in names)
