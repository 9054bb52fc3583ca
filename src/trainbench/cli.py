"""The `trainbench` command: one argparse front that lists every subcommand with a one-line description and
`--version`; each subcommand's module parses its own arguments (so a wrong flag shows that subcommand's usage)
and is imported only when called: the operator side never imports torch.

Errors are one line on stderr and a non-zero exit: a closed pipe (`trainbench plan --json | head`) ends quietly
(exit 141, like a shell's SIGPIPE), Ctrl-C exits 130, and no subcommand prints a traceback for a known failure.
"""

from __future__ import annotations

import argparse
import os
import sys

# name -> (module, one-line description); modules serving several subcommands have TAKES_SUBCOMMAND = True
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("trainbench.operator.commands", "run a BenchmarkRun here (--local) or submit it to a cluster"),
    "plan": ("trainbench.operator.commands", "print the cases a BenchmarkRun manifest plans"),
    "get": ("trainbench.operator.commands", "list the BenchmarkRuns of a namespace, or show one run's cases"),
    "watch": ("trainbench.operator.commands", "follow one BenchmarkRun until it finishes"),
    "cancel": ("trainbench.operator.commands", "stop a BenchmarkRun and write the results of what finished"),
    "report": ("trainbench.operator.commands", "render the report of results (folder, file, configmap/, br/NAME)"),
    "compare": ("trainbench.operator.commands", "diff two runs' results (A = before, B = after)"),
    "publish": ("trainbench.operator.commands", "commit a run's report.md and results.json to a git branch (--pr)"),
    "baseline": ("trainbench.operator.commands", "accept a run as the baseline, or acknowledge a change point"),
    "bench": ("trainbench.trainer.bench", "trainer bench mode: train/measure one case in this process"),
    "submit": ("trainbench.operator.submit", "create a dated BenchmarkRun from a suite (the CronJob's command)"),
    "operator": ("trainbench.operator.controller.runner", "run the kopf operator"),
    "crd": ("trainbench.operator.crd", "print the BenchmarkRun CRD (generated from the API types)"),
}
EXIT_BROKEN_PIPE = 141
EXIT_INTERRUPTED = 130


def version() -> str:
    try:
        from importlib.metadata import version as dist_version

        return dist_version("trainbench")
    except Exception:  # noqa: BLE001 - not installed as a distribution (a bare checkout)
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainbench",
        usage="trainbench {" + ",".join(COMMANDS) + "} ...",
        description="Nightly GPU training benchmarks: run, plan, follow, report, compare and publish BenchmarkRuns.",
        epilog="`trainbench COMMAND --help` shows a command's own options.",
    )
    p.add_argument("--version", action="version", version=f"trainbench {version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_, text) in COMMANDS.items():
        sub.add_parser(name, help=text, description=text)  # listed here; the module parses the rest
    return p


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "--version") or argv[0] not in COMMANDS:
        parser = build_parser()
        if not argv:
            parser.print_help(sys.stderr)
            return 2
        if argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
            parser.error(f"unknown option {argv[0]!r}: options go after the command (trainbench COMMAND --help)")
        if argv[0] not in ("-h", "--help", "--version"):
            from difflib import get_close_matches

            near = get_close_matches(argv[0], COMMANDS, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            print(
                f"trainbench: error: unknown command {argv[0]!r}; {hint}known: {', '.join(COMMANDS)}", file=sys.stderr
            )
            return 2
        parser.parse_args(argv[:1])  # prints the help or the version and exits 0
        return 0
    import importlib

    cmd, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[cmd][0])
    return module.main(argv if getattr(module, "TAKES_SUBCOMMAND", False) else rest) or 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _dispatch(argv)
        sys.stdout.flush()  # a closed pipe shows here at the latest, while we can still catch it
        return code
    except BrokenPipeError:
        # the reader went away (`| head`): no traceback, and none at interpreter exit either
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("trainbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
