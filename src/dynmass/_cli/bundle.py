"""``dynmass bundle RUN_DIR``: one self-describing model file from a training run folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bundle`` subcommand."""
    p = sub.add_parser(
        "bundle",
        help="pack a training run (fold models + interval calibration) into a model bundle",
        description="Reads RUN_DIR (settings.json, fold_XX.h5, predictions.csv) and writes one "
        "HDF5 bundle for `dynmass predict --model`: every fold model (their mean is the point "
        "estimate), the observe settings, the training domain, and the Neyman belt that turns "
        "a prediction into an interval. The belt is calibrated on --calibrate-on views of "
        "independent universes predicted by the fold ensemble, else on the run's held-out "
        "views. --coverage checks the 68% and 95% interval coverage by cross-fitting; "
        "--test-on checks it on views of further independent universes.",
    )
    p.add_argument("run_dir", type=Path, help="training run folder (from `dynmass train`)")
    p.add_argument("-o", "--output", type=Path, required=True, help="bundle file to write")
    p.add_argument("--observations", type=Path, default=None,
                   help="training observations file (default: the one in settings.json)")
    p.add_argument("--calibrate-on", type=Path, nargs="+", default=None, metavar="OBS",
                   help="observations files of universes the run never saw (same observe "
                   "settings): calibrate the intervals on the fold ensemble's predictions of them")
    p.add_argument("--test-on", type=Path, nargs="+", default=None, metavar="OBS",
                   help="observations files of further independent universes: check coverage "
                   "on them (writes <output stem>_coverage.json/.png)")
    p.add_argument("--coverage", action="store_true",
                   help="check coverage by cross-fitting over (pseudo-)folds (writes "
                   "<output stem>_coverage[_crossfit].json/.png)")
    p.add_argument("--k-neighbors", type=int, default=None,
                   help="fewest calibration views per belt window (default: max(200, n/20))")
    p.add_argument("--min-hosts", type=int, default=None,
                   help="fewest distinct hosts per belt window and beyond each end of the "
                   "calibrated mass range (default 25)")
    p.add_argument("--edge-margin", type=float, default=None,
                   help="calibrated range starts this many dex inside the training mass range "
                   "(default 0.2)")
    p.add_argument("--interval-method", choices=("neyman", "neyman_n", "knn_pred"),
                   default="neyman",
                   help="neyman: coverage at every true mass (default); neyman_n: one belt per "
                   "band of galaxies in the cylinder, coverage at every true mass and richness "
                   "(for models trained over randomised surveys); knn_pred: residual quantiles "
                   "at the predicted mass")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the pseudo-folds and of the bootstrap errors (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Make the bundle (and the coverage checks); exit 1 if a coverage check fails."""
    from dynmass.bundle import make_bundle
    from dynmass.coverage import coverage, coverage_summary, write_coverage
    from dynmass.intervals import EDGE_MARGIN, MIN_HOSTS

    bundle = make_bundle(args.run_dir, args.output, observations=args.observations,
                         calibration_observations=args.calibrate_on,
                         k_neighbors=args.k_neighbors, method=args.interval_method,
                         min_hosts=args.min_hosts or MIN_HOSTS,
                         edge_margin=EDGE_MARGIN if args.edge_margin is None else args.edge_margin,
                         seed=args.seed)
    print(f"bundle of {len(bundle.models)} '{bundle.model_name}' fold models written to "
          f"{args.output}; intervals calibrated on {bundle.interval['n_calibration_views']} views "
          f"of {bundle.interval['n_calibration_hosts']} hosts; calibrated log10 M200c range "
          f"{[round(x, 3) for x in bundle.domain['log10_m200c_calibrated']]}")
    ok = True
    if args.coverage:
        suffix = "_coverage_crossfit" if args.test_on else "_coverage"
        stem = args.output.with_name(args.output.stem + suffix)
        res = coverage(bundle, k_neighbors=args.k_neighbors, figure=stem.with_suffix(".png"),
                       seed=args.seed)
        write_coverage(res, stem.with_suffix(".json"))
        print(json.dumps(coverage_summary(res), indent=2))
        ok &= res["passed"]
    if args.test_on:
        stem = args.output.with_name(args.output.stem + "_coverage")
        res = coverage(bundle, observations=args.test_on, figure=stem.with_suffix(".png"),
                       seed=args.seed)
        write_coverage(res, stem.with_suffix(".json"))
        print(json.dumps(coverage_summary(res), indent=2))
        ok &= res["passed"]
    return 0 if ok else 1
