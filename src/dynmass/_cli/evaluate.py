"""``dynmass evaluate RUN ... -o DIR``: metrics, figures, report and the sampling-rate test."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynmass.errors import InputError


def _rates(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of rates: {text!r}") from exc


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = sub.add_parser(
        "evaluate",
        help="bias, scatter, outliers, timing and sampling-rate stability of training runs",
        description="Read predictions.csv, settings.json and timing.json of each run folder and "
        "write metrics.json, PNG figures, report.md and report.html to the output folder. The "
        "sampling-rate test reloads each run's fold models and its observations file.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="training run folders (runs/*)")
    p.add_argument("-o", "--output", type=Path, default=Path("report"),
                   help="output folder (default: report/)")
    p.add_argument("--observations", type=Path, default=None,
                   help="observations file for the sampling-rate test (default: the one in "
                   "the runs' settings.json)")
    p.add_argument("--sampling-rates", type=_rates, default=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5],
                   help="comma-separated galaxy sampling rates (default 1,0.9,0.8,0.7,0.6,0.5)")
    p.add_argument("--max-views", type=int, default=2000,
                   help="test views in the sampling-rate test (seeded subset; 0: all)")
    p.add_argument("--mass-bin", type=float, default=0.2,
                   help="width of the true-mass bins, dex (default 0.2)")
    p.add_argument("--n-boot", type=int, default=200,
                   help="bootstrap replicates over halos for the errors (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and resampling")
    p.add_argument("--no-sampling-test", action="store_true",
                   help="skip the sampling-rate test (fold models are then not needed)")
    p.add_argument("--no-figures", action="store_true", help="write metrics.json only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate the runs and print the table."""
    from dynmass.evaluate import evaluate_runs, format_table

    if args.max_views < 0:
        raise InputError(f"--max-views must be >= 0, got {args.max_views}")
    result = evaluate_runs(
        args.runs, args.output, observations=args.observations,
        sampling_rates=None if args.no_sampling_test else args.sampling_rates,
        seed=args.seed, max_views=args.max_views or None, mass_bins=args.mass_bin,
        n_boot=args.n_boot, figures=not args.no_figures,
    )
    print(format_table(result))
    print(f"\nmetrics: {args.output / 'metrics.json'}")
    if not args.no_figures:
        print(f"report:  {args.output / 'report.html'}")
    return 0
