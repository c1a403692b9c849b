"""`splitserve generate`: writes every file generated from the source, or checks them.

- the CRDs, in `manifests/crds/` and the chart's `crds/` (from the API models);
- the operator's RBAC: `manifests/rbac/operator.yaml` and the chart's `templates/_rules.tpl`
  (from `splitserve.operator.rbac`);
- the API reference `docs/reference.md` (from the API models);
- the Grafana dashboards in `charts/splitserve/dashboards/` and the metrics reference
  `docs/metrics.md` (from the metric names, `splitserve.observability`).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from splitserve.api import crdgen, reference
from splitserve.observability import generate as observability
from splitserve.operator import rbac


def outputs() -> dict[str, Callable[[], str]]:
    """Path under the repository root -> function rendering its text."""
    found: dict[str, Callable[[], str]] = {}
    for name, crd in crdgen.all_crds().items():
        for folder in crdgen.OUTPUT_DIRS:
            found[f"{folder}/{name}"] = functools.partial(crdgen.render, crd)
    found.update(rbac.OUTPUTS)
    found[reference.PATH] = reference.render
    found.update(observability.outputs())
    return found


def stale(root: Path) -> list[str]:
    """Generated paths whose committed text differs from what the source renders, and
    dashboards the chart would ship that nothing generates."""
    out = []
    for rel, make in outputs().items():
        path = root / rel
        if not path.exists() or path.read_text() != make():
            out.append(rel)
    return out + observability.foreign_dashboards(root)


def write(root: Path) -> list[str]:
    written = []
    for rel, make in outputs().items():
        path = root / rel
        text = make()
        if path.exists() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(rel)
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="splitserve generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path.cwd(),
                        help="repository root to write under (default: current directory)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming every generated file that differs")
    args = parser.parse_args(argv)
    if args.check:
        found = stale(args.root)
        if found:
            print("out of date (run `splitserve generate`): " + ", ".join(found), file=sys.stderr)
            return 1
        return 0
    for rel in write(args.root):
        print(f"wrote {rel}")
    return 0
