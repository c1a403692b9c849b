"""The source layout must never shadow the standard library, and import boundaries hold."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = [ROOT / "operator", ROOT / "worker"]

PROBE = (
    "import operator, sys; print(operator.__file__); "
    "sys.exit(not hasattr(operator, 'itemgetter'))"
)


@pytest.mark.parametrize(
    "flags",
    [[], ["-S"], ["-I"]],
    ids=["plain", "no-site", "isolated"],
)
def test_import_operator_is_stdlib_from_repo_root(flags: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in SOURCE_ROOTS))
    out = subprocess.run(
        [sys.executable, *flags, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    origin = Path(out.stdout.strip())
    assert ROOT not in origin.parents, f"`import operator` resolved inside the repo: {origin}"


def test_import_operator_in_subprocess_of_subprocess() -> None:
    nested = f"import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', {PROBE!r}]))"
    out = subprocess.run([sys.executable, "-c", nested], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_no_source_root_has_a_top_level_init() -> None:
    for root in SOURCE_ROOTS:
        assert not (root / "__init__.py").exists(), root
        assert not (root / "splitserve" / "__init__.py").exists(), "splitserve is a namespace"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _package_files(*parts: str) -> list[Path]:
    files: list[Path] = []
    for root in SOURCE_ROOTS:
        base = root.joinpath("splitserve", *parts)
        if base.is_file():
            files.append(base)
        elif base.is_dir():
            files += sorted(base.rglob("*.py"))
    return files


# (package, forbidden import prefixes)
BOUNDARIES = [
    (("api",), ("splitserve.operator", "splitserve.autoscaler", "splitserve.worker",
                "splitserve.engine", "splitserve.kvtransfer", "splitserve.router",
                "splitserve.local", "torch", "grpc", "kopf", "kubernetes")),
    (("operator",), ("torch", "grpc", "splitserve.engine", "splitserve.kvtransfer")),
    (("autoscaler",), ("torch", "grpc", "splitserve.engine", "splitserve.kvtransfer")),
    (("observability",), ("torch", "grpc", "kopf", "kubernetes", "prometheus_client",
                          "splitserve.operator", "splitserve.autoscaler", "splitserve.worker",
                          "splitserve.engine", "splitserve.kvtransfer", "splitserve.router")),
    (("engine", "scheduler.py"), ("torch", "numpy")),
    (("engine", "block_manager.py"), ("torch", "numpy")),
    (("engine", "sequence.py"), ("torch", "numpy")),
]


@pytest.mark.parametrize("package,forbidden", BOUNDARIES, ids=lambda v: ".".join(v)[:40])
def test_import_boundaries(package: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    files = _package_files(*package)
    assert files, f"splitserve.{'.'.join(package)} is missing: the boundary would check nothing"
    for path in files:
        for name in _imports(path):
            bad = [f for f in forbidden if name == f or name.startswith(f + ".")]
            assert not bad, f"{path.relative_to(ROOT)} imports {name}"


def test_test_modules_have_unique_basenames() -> None:
    """pytest imports test modules of folders without `__init__.py` by basename: two files of
    one name in tests/ and e2e/ stop the whole collection."""
    root = Path(__file__).resolve().parents[2]
    names = sorted(p.name for folder in ("tests", "e2e")
                   for p in (root / folder).rglob("test_*.py"))
    assert sorted(set(names)) == names, [n for n in set(names) if names.count(n) > 1]
