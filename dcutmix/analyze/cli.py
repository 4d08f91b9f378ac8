"""``dcutmix-analyze PATH...``: the command line over ``analyze_run``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcutmix.analyze.common import (
    ANALYSIS_FILE,
    DEFAULT_DIRECTIONS,
    DEFAULT_MAX_IMAGES,
    DEFAULT_SIGMAS,
)
from dcutmix.analyze.runs import (
    analysis_settings,
    analyze_run,
    check_options,
    find_runs,
    skip_reason,
    up_to_date,
)
from dcutmix.analyze.uncertainty import DEFAULT_VIEWS, score_run
from dcutmix.errors import InputError
from dcutmix.run.progress import log

if TYPE_CHECKING:
    pass


class _Parser(argparse.ArgumentParser):
    """Argument errors as one InputError line instead of usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse words its own messages; the legacy one-string form keys them on their prefix.
        raise InputError(message)


def _max_images(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid; use a whole number >= 1 or all"
        ) from None


def _sigmas(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid; give comma-separated numbers, e.g. 0,0.002,0.004"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dcutmix-analyze",
        description="Write analysis.json (clean and FGSM error, calibration, loss landscape, "
        "predictive entropy) into every finished run folder given or found in a sweep folder.",
    )
    add = parser.add_argument
    add("paths", nargs="+", metavar="PATH", help="run folders or sweep folders")
    add("--checkpoint", default="last", help="last (default) or best")
    add(
        "--max-images",
        type=_max_images,
        default=DEFAULT_MAX_IMAGES,
        help=f"validation images used, from the start (default {DEFAULT_MAX_IMAGES}; or all)",
    )
    add(
        "--directions",
        type=int,
        default=DEFAULT_DIRECTIONS,
        help=f"random weight directions (default {DEFAULT_DIRECTIONS})",
    )
    add(
        "--sigmas",
        type=_sigmas,
        default=DEFAULT_SIGMAS,
        help="comma-separated weight noise scales (default 0,0.002,...,0.012)",
    )
    add("--batch-size", type=int, help="images per batch (default: the run's eval batch size)")
    add("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    add("--seed", type=int, default=0, help="seed of the weight directions (default 0)")
    add("--force", action="store_true", help="redo analyses already made with these settings")
    return parser


def _uncertainty_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dcutmix-analyze uncertainty",
        description="Score every training image of a finished run (uncertainty from M DCutMix "
        "views, predictive entropy, margin); writes uncertainty.csv, uncertainty.json and "
        "plot_uncertainty.png into the run folder.",
    )
    add = parser.add_argument
    add("run", metavar="RUN", help="a finished run folder with a checkpoint")
    add("--views", type=int, default=DEFAULT_VIEWS, help=f"M (default {DEFAULT_VIEWS})")
    add("--k", type=int, help="images per view (default: the run's K)")
    add("--alpha", type=float, help="Dirichlet concentration (default: the run's alpha)")
    add("--dataset", help="refuse a run trained on another dataset than this one")
    add("--checkpoint", default="last", choices=("last", "best"), help="last (default) or best")
    add("--batch-size", type=int, help="images per batch (default 500)")
    add("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    add("--seed", type=int, default=0, help="seed of the views (default 0)")
    return parser


def uncertainty_main(argv: list[str]) -> int:
    """``dcutmix-analyze uncertainty RUN [options]``; returns the exit code."""
    from dcutmix.config import resolve_device

    try:
        args = _uncertainty_parser().parse_args(argv)
        try:
            device = resolve_device(args.device)
        except InputError as error:
            raise InputError("--device", error.message) from None
        meta = score_run(
            Path(args.run), views=args.views, k=args.k, alpha=args.alpha, seed=args.seed,
            dataset=args.dataset, checkpoint=args.checkpoint, batch_size=args.batch_size,
            device=device,
        )  # fmt: skip
    except InputError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    cost = meta["cost_in_training_epochs"]
    log(
        f"{args.run}: scored {meta['images']} images with M={meta['views']} views "
        f"(K={meta['k']}, alpha={meta['alpha']:g}) in {meta['seconds']:.1f}s"
        + (f" ({cost:.2f} training epochs)" if cost is not None else "")
        + "; wrote uncertainty.csv"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point: ``dcutmix-analyze PATH... [options]`` or ``dcutmix-analyze
    uncertainty RUN [options]``; returns the exit code."""
    from dcutmix.config import resolve_device

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["uncertainty"]:
        return uncertainty_main(argv[1:])
    try:
        args = _parser().parse_args(argv)
        check_options(
            checkpoint=args.checkpoint,
            max_images=args.max_images,
            directions=args.directions,
            sigmas=args.sigmas,
            batch_size=args.batch_size,
        )
        try:
            device = resolve_device(args.device)
        except InputError as error:  # its message names the training key
            raise InputError("--device", error.message) from None
        runs = find_runs(args.paths)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2

    settings = analysis_settings(
        args.checkpoint, args.max_images, args.directions, args.sigmas, args.seed
    )
    analysed, skipped, failed = 0, 0, 0
    for run_dir in runs:
        reason = skip_reason(run_dir, args.checkpoint)
        if reason is not None:
            log(f"skipping {run_dir}: {reason}")
            skipped += 1
            continue
        if not args.force and up_to_date(run_dir, settings, args.checkpoint):
            log(f"{run_dir}: {ANALYSIS_FILE} is up to date for these settings (--force redoes it)")
            analysed += 1
            continue
        try:
            analysis = analyze_run(
                run_dir,
                checkpoint=args.checkpoint,
                max_images=args.max_images,
                directions=args.directions,
                sigmas=args.sigmas,
                seed=args.seed,
                batch_size=args.batch_size,
                device=device,
            )
        except InputError as error:
            log(f"error: {run_dir}: {error}")
            failed += 1
            continue
        analysed += 1
        log(_summary_line(run_dir, analysis))
    log(f"{analysed} run(s) analysed, {skipped} skipped, {failed} failed")
    return 0 if analysed else 1


def _summary_line(run_dir: Path, analysis: dict[str, Any]) -> str:
    clean, fgsm, landscape = analysis["clean"], analysis["fgsm"], analysis["loss_landscape"]
    ends = [
        "diverged" if v is None else f"{v:.4f}"
        for v in (landscape["loss"][0], landscape["loss"][-1])
    ]
    return (
        f"{run_dir}: {analysis['images']} images, top-1 err {clean['top1_err']:.2f}%, "
        f"NLL {clean['nll']:.4f}, ECE {analysis['calibration']['ece']:.2f}%, "
        f"FGSM {fgsm['epsilons_255'][-1]}/255 top-1 err {fgsm['top1_err'][-1]:.2f}%, "
        f"loss {ends[0]} at sigma {landscape['sigmas'][0]:g} to {ends[1]} at "
        f"{landscape['sigmas'][-1]:g}; wrote {ANALYSIS_FILE}"
    )


if __name__ == "__main__":
    sys.exit(main())
