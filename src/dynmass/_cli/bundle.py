"""``dynmass bundle RUN_DIR``: one self-describing model file from a training run folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bundle`` subcommand."""
    p = sub.add_parser(
        "bundle",
        help="pack a training run (fold models + held-out calibration) into a model bundle",
        description="Reads RUN_DIR (settings.json, fold_XX.h5, predictions.csv) and writes one "
        "HDF5 bundle for `dynmass predict --model`: every fold model (their mean is the point "
        "estimate), the observe settings, the training domain, and the held-out residuals "
        "that calibrate the intervals. With --coverage, also checks the 68%% and 95%% "
        "interval coverage on held-out views by cross-fitting over folds.",
    )
    p.add_argument("run_dir", type=Path, help="training run folder (from `dynmass train`)")
    p.add_argument("-o", "--output", type=Path, required=True, help="bundle file to write")
    p.add_argument("--observations", type=Path, default=None,
                   help="training observations file (default: the one in settings.json)")
    p.add_argument("--k-neighbors", type=int, default=None,
                   help="held-out views per interval window (default: max(200, n/20))")
    p.add_argument("--interval-method", choices=("neyman", "knn_pred"), default="neyman",
                   help="neyman: coverage at every true mass (default); knn_pred: residual "
                   "quantiles at the predicted mass")
    p.add_argument("--coverage", action="store_true",
                   help="also write <output stem>_coverage.json and .png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Make the bundle (and the coverage check); exit 1 if the coverage check fails."""
    from dynmass.bundle import coverage, make_bundle, write_coverage

    bundle = make_bundle(args.run_dir, args.output, observations=args.observations,
                         k_neighbors=args.k_neighbors, method=args.interval_method)
    print(f"bundle of {len(bundle.models)} '{bundle.model_name}' fold models written to "
          f"{args.output}")
    if not args.coverage:
        return 0
    stem = args.output.with_name(args.output.stem + "_coverage")
    res = coverage(bundle, k_neighbors=args.k_neighbors, figure=stem.with_suffix(".png"))
    write_coverage(res, stem.with_suffix(".json"))
    summary = {k: res[k] for k in ("coverage_68", "coverage_95", "n_views", "scheme", "passed")}
    print(json.dumps(summary, indent=2))
    return 0 if res["passed"] else 1
