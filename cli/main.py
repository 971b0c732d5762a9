"""The ``suite`` command line.

    suite list
    suite show dpsgd [--tier quick]
    suite run dpsgd --set method=dpsgd --set epsilon=3 [--force]
    suite sweep [dpsgd ...] [--tier quick] [--jobs 2] [--ray-address 127.0.0.1:6379]
    suite leaderboard [--out site]
    suite claims [dpsgd ...] [--tier quick]
    suite deploy fl [--smoke] --set method=secagg_sq [--workdir DIR]

Exit status: 0 when all went well, 1 when a run failed, 2 for bad input (nothing is run
or written), 130 when interrupted. ``python -m cli ...`` is the same command without the
installed ``suite`` script. A subcommand is one ``sub.add_parser`` block in :func:`_parser`
and one ``_cmd_<name>`` function.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections.abc import Sequence

from suite.errors import SuiteError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from runners.outcome import sigterm_as_interrupt
    from suite.progress import console

    try:
        with sigterm_as_interrupt():
            return args.handler(args)
    except UsageError as exc:
        console.print(f"[red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except SuiteError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: running runs were recorded as KILLED")
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="suite", description="Privacy-and-efficiency benchmark suite.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered tasks, their methods and tiers")
    p.set_defaults(handler=_cmd_list)

    p = sub.add_parser("show", help="a task's resolved config and every key it accepts")
    p.add_argument("task")
    p.add_argument("--tier", default="quick")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(handler=_cmd_show)

    p = sub.add_parser("run", help="run one config of a task and log it to MLflow")
    p.add_argument("task")
    p.add_argument("--tier", default="quick")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--force", action="store_true", help="run even if a FINISHED run of this config exists")
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("sweep", help="run the grid of a tier for some or all tasks")
    p.add_argument("tasks", nargs="*", help="task names (default: all)")
    p.add_argument("--tier", default="quick")
    p.add_argument("--jobs", type=int, default=None,
                   help="cells run in parallel (default 1; with --ray-address, the cluster's CPUs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key in every cell")
    p.add_argument("--force", action="store_true", help="rerun cells that already have a FINISHED run")
    p.add_argument("--timeout", type=float, default=None, help="per-cell time limit in seconds (default: tier's)")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="run the cells as tasks on this existing Ray cluster (e.g. 127.0.0.1:6379)")
    p.set_defaults(handler=_cmd_sweep)

    p = sub.add_parser("leaderboard", help="render finished runs into a static site")
    p.add_argument("--out", default="site")
    p.add_argument("--rebuild", action="store_true", help="render even when the site is up to date with the store")
    p.set_defaults(handler=_cmd_leaderboard)

    p = sub.add_parser("claims", help="each paper's claims judged on the store's runs (paired statistics)")
    p.add_argument("tasks", nargs="*", help="task names (default: all)")
    p.add_argument("--tier", default="quick")
    p.set_defaults(handler=_cmd_claims)

    p = sub.add_parser("deploy", help="run one config on Flower's Deployment Engine (SuperLink + SuperNodes on "
                                      "127.0.0.1) and print its metrics")
    p.add_argument("task", choices=["fl"], help="a task with a Flower app (fl)")
    p.add_argument("--tier", default="quick")
    p.add_argument("--smoke", action="store_true", help="apply the tier's smoke keys")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workdir", default=None, help="keep logs and results here (default: a temporary directory)")
    p.add_argument("--timeout", type=float, default=None, help="seconds (default: the tier's timeout_s)")
    p.set_defaults(handler=_cmd_deploy)
    return parser


def _cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from suite.task import discover

    registry = discover()
    table = Table("task", "methods", "tiers", "description")
    for name in registry:
        task = registry.get(name)
        table.add_row(name, ", ".join(task.methods()), ", ".join(task.tiers()), task.description)
    _stdout().print(table)
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    import yaml
    from rich.table import Table

    from suite.config import describe_fields, expand_grid, parse_overrides
    from suite.task import get_task

    task = get_task(args.task)
    config = task.resolve(args.tier, parse_overrides(args.overrides))
    out = _stdout()
    out.print(f"[bold]{task.name}[/] ({args.tier} tier, task version {task.version}): {task.description}")
    out.print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).rstrip(), markup=False)
    table = Table("key", "type", "default", "allowed", "meaning", title=f"keys of method {config.method}")
    for row in describe_fields(task.config_model(config.method)):
        table.add_row(row["key"], row["type"], repr(row["default"]), row["allowed"], row["doc"])
    out.print(table)
    others = [m for m in task.methods() if m != config.method]
    out.print(f"other methods: {', '.join(others) or 'none'} (--set method=NAME lists a method's keys)")
    spec = task.tier(args.tier)
    out.print(f"{args.tier} grid: {len(expand_grid(spec.grid))} cells (before de-duplication), "
              f"timeout {spec.timeout_s:g} s per cell")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from runners.local import run_one
    from suite.config import parse_overrides
    from suite.task import get_task
    from suite.tracking import Tracker

    task = get_task(args.task)
    config = task.resolve(args.tier, parse_overrides(args.overrides))
    tracker = Tracker()
    outcome = run_one(task, args.tier, config, tracker=tracker, force=args.force)
    if outcome.status == "CACHED":
        _stdout().print(f"a FINISHED run of this config exists ({outcome.run_id}); use --force to run it again")
    elif outcome.status == "BUSY":
        _stdout().print("another live process is running this config now; its run will be in the store")
    elif outcome.metrics:
        _print_metrics(outcome.metrics)
    _stdout().print(f"run id: {outcome.run_id}  store: {tracker.uri}")
    return EXIT_OK if outcome.ok or outcome.status == "BUSY" else EXIT_FAILED


def _cmd_sweep(args: argparse.Namespace) -> int:
    from runners.sweep import plan, run_sweep, warm_up
    from suite.store import sqlite_path, tracking_uri
    from suite.config import parse_overrides
    from suite.task import discover, get_task
    from suite.tracking import Tracker

    names = args.tasks or discover().names()
    tasks = [get_task(n) for n in names]
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    jobs = args.jobs if args.jobs is not None or args.ray_address else 1
    if args.ray_address:
        from runners.ray import probe

        probe(args.ray_address)  # before anything is planned or opened
    cells = plan(tasks, args.tier, parse_overrides(args.overrides), timeout_s=args.timeout)
    preload = [m for t in tasks for m in t.preload]
    store = sqlite_path(tracking_uri())
    if not args.ray_address and store is not None and not store.exists():
        warm_up(preload)  # a new store: every cell will run, and creating the store takes seconds
    tracker = Tracker()
    outcomes = run_sweep(cells, tracker=tracker, jobs=jobs, force=args.force, preload=preload,
                         ray_address=args.ray_address)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    _stdout().print(f"sweep of {len(cells)} cells: {summary}; store: {tracker.uri}")
    return EXIT_OK if all(o.ok or o.status == "BUSY" for o in outcomes) else EXIT_FAILED


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from leaderboard.stamp import site_stamp, up_to_date, write_stamp
    from suite.store import tracking_uri
    from suite.task import declared_claims

    out, claims = Path(args.out), declared_claims()
    stamp = None if args.rebuild else site_stamp(tracking_uri(), claims)
    if up_to_date(out, stamp):
        index = out / "index.html"
        _stdout().print(f"leaderboard in {out} is up to date with {tracking_uri()} (nothing changed; --rebuild "
                        f"renders it anyway); open {index.resolve().as_uri()}", soft_wrap=True)
        return EXIT_OK
    from leaderboard.build import build_site
    from suite.tracking import Tracker

    tracker = Tracker(write=False)
    write_stamp(out, None)  # a build cut short leaves no stamp behind
    index = build_site(tracker, out, claims=claims)
    write_stamp(out, stamp)
    _stdout().print(f"leaderboard written to {index} from {tracker.uri}; open {index.resolve().as_uri()}",
                    soft_wrap=True)
    return EXIT_OK


def _cmd_claims(args: argparse.Namespace) -> int:
    """The claims table; exit 0 whatever the verdicts (a verdict is a finding, not a failure)."""
    from rich.table import Table

    from leaderboard.build import judge
    from leaderboard.collect import collect
    from leaderboard.paired import fmt_effect
    from suite.task import declared_claims
    from suite.task import discover
    from suite.tracking import Tracker

    registry = discover()
    claims = declared_claims(args.tasks or None)  # an unknown task is a UsageError
    tiers = sorted({t for name in (args.tasks or registry.names()) for t in registry.get(name).tiers()})
    if args.tier not in tiers:
        raise UsageError(f"unknown tier {args.tier!r} (tiers of these tasks: {', '.join(tiers)})")
    tracker = Tracker(write=False)
    runs, schemas = collect(tracker)
    _, rows = judge(tracker, runs, schemas, claims, tiers=[args.tier])
    table = Table("claim", "verdict", "effect", "95% interval", "pairs", title=f"claims, {args.tier} tier")
    colors = {"holds": "green", "contradicted": "red", "inconclusive": "yellow"}
    notes = []
    for r in rows:
        kind = r["effect_kind"]
        low, high = fmt_effect(r["ci_low"], kind), fmt_effect(r["ci_high"], kind)
        interval = "—" if r["ci_low"] is None else f"[{low}, {high}]"
        table.add_row(r["id"], f"[{colors[r['verdict']]}]{r['verdict']}[/]", fmt_effect(r["effect"], kind), interval,
                      str(r["pairs"]))
        notes.append(f"{r['id']}: {r['comparison']}; {r['interval'] or 'no interval'}"
                     + "".join(f"; {remark}" for remark in r["remarks"]))
    out = _stdout()
    out.print(table)
    for line in notes:
        out.print(line, markup=False, soft_wrap=True)
    out.print(f"store: {tracker.uri}; details and links: suite leaderboard, then claims.html")
    return EXIT_OK


def _print_metrics(metrics: dict[str, float]) -> None:
    from rich.table import Table

    table = Table("metric", "value")
    for key in sorted(metrics):
        table.add_row(key, f"{metrics[key]:.6g}")
    _stdout().print(table)


def _stdout():  # noqa: ANN202 - a rich Console
    from rich.console import Console

    return Console(highlight=False)


if __name__ == "__main__":
    sys.exit(main())


def _cmd_deploy(args: argparse.Namespace) -> int:
    """One SuperNode per client; nothing is logged to MLflow (a check of the apps, not a benchmark run)."""
    import json
    import tempfile
    from pathlib import Path

    from runners.flower_deploy import Federation
    from suite import resolve
    from suite.config import parse_overrides
    from suite.task import get_task
    from tasks.fl.deployed import deployed_metrics, run_deployed

    task = get_task(args.task)
    tier = task.tier(args.tier)
    config = resolve.build(task, [resolve.lenient(tier.defaults), resolve.lenient(tier.smoke if args.smoke else {}),
                                  resolve.strict(parse_overrides(args.overrides))])
    with tempfile.TemporaryDirectory(prefix="suite-deploy-") as tmp:
        with Federation(config.num_clients, Path(args.workdir or tmp)) as federation:
            result = run_deployed(federation, config, timeout=args.timeout or tier.timeout_s)
    print(json.dumps({**deployed_metrics(result), "wall_s": result["wall_s"]}, indent=1))
    return EXIT_OK
