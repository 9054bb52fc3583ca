"""The `trainbench` command. Subcommands import their module lazily: the operator side never imports torch."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "bench": "trainbench.trainer.__main__",  # trainer bench mode (also: python -m trainbench.trainer)
        "run": "trainbench.operator.commands",  # run a BenchmarkRun (--local, or apply to a cluster)
        "report": "trainbench.operator.commands",  # render a report from results
        "compare": "trainbench.operator.commands",  # diff two runs
        "plan": "trainbench.operator.commands",  # print the cases a BenchmarkRun plans
        "operator": "trainbench.operator.controller.runner",  # run the kopf operator
        "submit": "trainbench.operator.submit",  # create a dated BenchmarkRun from a suite (the CronJob's command)
        "crd": "trainbench.operator.crd",  # print the BenchmarkRun CRD (generated from the API types)
    }
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: trainbench {" + ",".join(commands) + "} ...")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in commands:
        print(f"trainbench: unknown command {cmd!r}; known: {', '.join(commands)}", file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(commands[cmd])
    # modules serving several subcommands take the subcommand as their first argument
    return module.main(argv if getattr(module, "TAKES_SUBCOMMAND", False) else rest) or 0


if __name__ == "__main__":
    sys.exit(main())
