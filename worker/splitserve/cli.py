"""The `splitserve` command: one entry point, each subcommand owned by its component."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with `main(argv: list[str]) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("splitserve.local.demo", "start the local stack on the tiny model, ask, print, exit"),
    "run": ("splitserve.local.run", "run a SplitService spec as local processes"),
    "worker": ("splitserve.worker.main", "run one worker (--role prefill|decode|colocated)"),
    "router": ("splitserve.router.main", "run the OpenAI-compatible router"),
    "operator": ("splitserve.operator.main", "run the Kubernetes operator"),
    "profile": ("splitserve.autoscaler.profile", "measure a pool's capacity profile"),
    "crds": ("splitserve.api.crdgen", "write the CRD YAML generated from the API models"),
    "generate": ("splitserve.operator.generate",
                 "write every generated file (CRDs, operator RBAC, API reference)"),
    "make-model": ("splitserve.engine.tiny_model", "write a deterministic tiny checkpoint"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: splitserve COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"splitserve: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"splitserve: command {name!r} is not part of this build", file=sys.stderr)
            return 2
        raise
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
