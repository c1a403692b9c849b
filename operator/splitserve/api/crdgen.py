"""`splitserve crds`: writes the CustomResourceDefinitions generated from the API models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from splitserve.api import splitpool, splitservice
from splitserve.api.base import GROUP, VERSION
from splitserve.api.openapi import structural_schema

CATEGORIES = ["splitserve", "all"]
OUTPUT_DIRS = ("manifests/crds", "charts/splitserve/crds")


def _object_schema(model: type[BaseModel], description: str) -> dict[str, Any]:
    schema = structural_schema(model)
    props = schema["properties"]
    props["apiVersion"] = {"type": "string", "description": "Versioned schema of this object."}
    props["kind"] = {"type": "string", "description": "REST resource this object represents."}
    props["metadata"] = {"type": "object"}
    schema["description"] = description
    schema["required"] = ["spec"]
    return schema


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
    subresources: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "splitserve", "app.kubernetes.io/part-of":
                       "splitserve"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def _column(name: str, path: str, kind: str = "string", description: str = "",
            priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": kind, "jsonPath": path}
    if description:
        column["description"] = description
    if priority:
        column["priority"] = priority
    return column


def splitservice_crd() -> dict[str, Any]:
    schema = _object_schema(
        splitservice.SplitService,
        "SplitService serves one model with separate prefill and decode worker pools behind an "
        "OpenAI-compatible router.",
    )
    columns = [
        _column("Ready", '.status.conditions[?(@.type=="Ready")].status',
                description="Whether every pool and the router are ready."),
        _column("Prefill", ".status.prefill.summary", description="Prefill ready/desired."),
        _column("Decode", ".status.decode.summary", description="Decode ready/desired."),
        _column("Endpoint", ".status.endpoint", description="Router address."),
        _column("Reason", '.status.conditions[?(@.type=="Ready")].reason', priority=1,
                description="Why the service is or is not ready."),
        _column("Model", ".spec.model.name", priority=1, description="Served model name."),
        _column("Age", ".metadata.creationTimestamp", "date"),
    ]
    return _crd(kind=splitservice.KIND, plural=splitservice.PLURAL, short_names=["ssvc"],
                schema=schema, columns=columns, subresources={"status": {}})


def splitpool_crd() -> dict[str, Any]:
    schema = _object_schema(
        splitpool.SplitPool,
        "SplitPool is one worker pool of a SplitService. Its replica count belongs to whoever "
        "drives the scale subresource (the built-in autoscaler, an HPA, KEDA or kubectl scale).",
    )
    columns = [
        _column("Service", ".spec.service", description="Owning SplitService."),
        _column("Role", ".spec.role", description="prefill or decode."),
        _column("Desired", ".spec.replicas", "integer", "Workers asked for."),
        _column("Ready", ".status.readyReplicas", "integer", "Workers passing readiness."),
        _column("Age", ".metadata.creationTimestamp", "date"),
    ]
    subresources = {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    return _crd(kind=splitpool.KIND, plural=splitpool.PLURAL, short_names=["spool"],
                schema=schema, columns=columns, subresources=subresources)


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object, for every kind of the API."""
    return {
        f"{GROUP}_{splitservice.PLURAL}.yaml": splitservice_crd(),
        f"{GROUP}_{splitpool.PLURAL}.yaml": splitpool_crd(),
    }


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `splitserve crds` from splitserve.api; do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="splitserve crds", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path.cwd(),
                        help="repository root to write under (default: current directory)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a committed CRD differs")
    parser.add_argument("--stdout", action="store_true", help="print the CRDs instead")
    args = parser.parse_args(argv)
    crds = {name: render(crd) for name, crd in all_crds().items()}
    if args.stdout:
        sys.stdout.write("---\n".join(crds.values()))
        return 0
    stale = []
    for folder in OUTPUT_DIRS:
        target = args.root / folder
        for name, text in crds.items():
            path = target / name
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path))
                continue
            target.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run `splitserve crds`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0
