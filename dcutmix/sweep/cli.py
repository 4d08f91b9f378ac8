"""``dcutmix-sweep``: plan a sweep without running it, see where it stands, resume it."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dcutmix.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcutmix-sweep", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser(
        "plan", help="compose and check every job of a multirun command line, run none"
    )
    plan.add_argument(
        "--seconds-per-epoch",
        type=float,
        default=None,
        help="an epoch's time on one GPU, to print GPU-hours",
    )
    plan.add_argument(
        "-m", "--multirun", action="store_true", help="accepted, as dcutmix-train -m takes it"
    )
    plan.add_argument("overrides", nargs="*", help="the overrides you would give dcutmix-train -m")
    status = commands.add_parser("status", help="one line per job state, and who needs a person")
    status.add_argument("folder", type=Path)
    resume = commands.add_parser("resume", help="rerun the recorded command into the same folder")
    resume.add_argument("folder", type=Path)
    return parser


def run_plan(overrides: list[str], seconds_per_epoch: float | None) -> int:
    """Compose and check every point of ``overrides``; print the plan."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dcutmix.config import CONF_DIR, explain_composition_error, register
    from dcutmix.sweep.plan import plan_grid, plan_search
    from dcutmix.sweep.points import check_sweeper, read_sweep

    if seconds_per_epoch is not None and not seconds_per_epoch > 0:
        raise ConfigError(f"--seconds-per-epoch: must be > 0, got {seconds_per_epoch}")
    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            sweep = read_sweep([o for o in overrides if o not in ("-m", "--multirun")])
            check_sweeper(sweep)
            planner = plan_search if sweep.searched or not sweep.is_basic else plan_grid
            planner(sweep, seconds_per_epoch)
    except ConfigError:
        raise
    except Exception as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise ConfigError(explain_composition_error(error)) from None
    finally:
        GlobalHydra.instance().clear()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; bad input ends with one line and exit code 2."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "plan":
            code = run_plan(args.overrides, args.seconds_per_epoch)
        elif args.command == "status":
            from dcutmix.sweep.status import report_status

            report_status(args.folder.expanduser())
            code = 0
        else:
            from dcutmix.sweep.resume import resume

            code = resume(args.folder)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
