"""Bench mode's entry: `python -m trainbench.trainer` and `trainbench bench`.

    main(argv)           parse the CLI (config.py), run, print the table, write the outputs, exit code (contract.py)
      run(cfg)           the run context (context.py), rank 0's /metrics exporter, the process group's end
        dispatch(ctx)    by --type: train.py (after autobatch.py for --micro-batch auto), generate.py, verify.py;
                         --dry-run: dryrun.py
      --type calibrate   calibrate.py (no model: the device's GEMM and attention ceilings)

`run_bench(cfg) -> dict` runs one case in-process (under torchrun: one call per rank) and returns the result dict
that `main` writes to `--output` and to /dev/termination-log (result.py); stdout gets the human table, or with
`--json` the last stdout line `TRAINBENCH_RESULT <json>` (the table then goes to stderr). Measurement of the training types: train.py.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import warnings

from trainbench.trainer import calibrate, generate, verify
from trainbench.trainer import contract as c
from trainbench.trainer import distributed as dist_mod
from trainbench.trainer.autobatch import resolve_auto
from trainbench.trainer.config import JobConfig, parse_args
from trainbench.trainer.context import RunContext, open_context
from trainbench.trainer.dryrun import dry_run
from trainbench.trainer.metrics import Exporter
from trainbench.trainer.result import (
    classify_error,
    failed_result,
    for_termination_log,  # noqa: F401 - also imported from here (tests/operator/kubesim.py)
    train_table,
    write_outputs,
)
from trainbench.trainer.train import train


def main(argv: list[str] | None = None) -> int:
    is_main = dist_mod.env_world().rank == 0
    cfg = None
    exporter = None
    try:
        cfg = parse_args(argv)
        result, exporter = run(cfg)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - classified below, re-raised when unknown
        if isinstance(exc, KeyboardInterrupt):
            raise
        kind = classify_error(exc)
        if kind is None:
            raise
        code, reason, message = kind
        print(f"trainbench bench: {reason}: {message}", file=sys.stderr, flush=True)
        # --json unknown when the command line itself was refused: look for it
        line = cfg.json_line if cfg is not None else "--json" in (sys.argv[1:] if argv is None else argv)
        write_outputs(failed_result(cfg, reason, message), cfg, is_main, line=line)
        return code
    if is_main:
        human = sys.stderr if cfg.json_line else sys.stdout  # --json: stdout is for the result line
        if result.get("status") == "dry-run":
            print(json.dumps({k: v for k, v in result.items() if k != "schema"}, indent=1, default=str), file=human)
        else:
            print(type_table(result), file=human, flush=True)
    write_outputs(result, cfg, is_main)
    if exporter is not None:
        if cfg.linger > 0:
            time.sleep(cfg.linger)
        exporter.close()
    return c.EXIT_OK


def run_bench(cfg: JobConfig) -> dict:
    """Run one case in this process (one rank) and return the result dict (see the module doc)."""
    result, exporter = run(cfg)
    if exporter is not None:
        exporter.close()
    return result


def run(cfg: JobConfig) -> tuple[dict, Exporter | None]:
    """run_bench, returning (result, exporter) with the exporter still serving (state done) on rank 0."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    if cfg.type == c.CALIBRATE_TYPE:
        return calibrate.run_calibrate(cfg)
    ctx = open_context(cfg)
    if cfg.dry_run:
        return dry_run(ctx), None
    exporter = ctx.start_metrics()
    try:
        result = dispatch(ctx)
    except BaseException:
        if exporter is not None:
            exporter.set_state("failed")
            exporter.close()
        dist_mod.shutdown()
        raise
    if exporter is not None:
        exporter.set_state("done")
    dist_mod.shutdown()
    return result, exporter


def dispatch(ctx: RunContext) -> dict:
    """The case by --type; --micro-batch auto finds the micro-batch first (autobatch.py)."""
    if ctx.cfg.type == "generate":
        return generate.run_generate(ctx)
    if ctx.cfg.type == "verify":
        return verify.run_verify(ctx)
    found = None
    if ctx.cfg.micro_batch_auto:
        cfg, found = resolve_auto(ctx.cfg, ctx.spec, ctx.device, ctx.world, ctx.exporter)
        ctx = dataclasses.replace(ctx, cfg=cfg)
    result = train(ctx)
    if found is not None:
        result["autobatch"] = found
    return result


def type_table(result: dict) -> str:
    """The table printed after a run, by type."""
    kind = (result.get("config") or {}).get("type")
    if kind == "generate":
        return generate.table(result)
    if kind == "verify":
        return verify.table(result)
    if kind == c.CALIBRATE_TYPE:
        return calibrate.table(result)
    return train_table(result)
