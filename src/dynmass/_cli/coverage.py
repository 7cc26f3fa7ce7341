"""``dynmass coverage BUNDLE OBS...``: check a bundle's intervals on independent mock views."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``coverage`` subcommand."""
    p = sub.add_parser(
        "coverage",
        help="check a model bundle's 68%%/95%% intervals on views of independent mock universes",
        description="Predicts every view of the OBS files exactly as `dynmass predict` does "
        "(fold-ensemble mean, the bundle's Neyman belt) and reports how often the 68% and "
        "95% intervals contain the true mass, overall and per 0.2 dex bin of true and of "
        "predicted mass, with host-bootstrap errors. The views must be observed like the "
        "bundle's training views and come from universes it was neither trained nor "
        "calibrated on. Exit status 1 when a judged bin misses 68% +/- 3% or 95% +/- 2%.",
    )
    p.add_argument("bundle", type=Path, help="model bundle (dynmass bundle)")
    p.add_argument("observations", type=Path, nargs="+", help="observations files with true masses")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output stem: writes OUTPUT.json and OUTPUT.png")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap errors (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the check, write JSON and PNG, print the summary."""
    from dynmass.bundle import load_bundle
    from dynmass.coverage import coverage, coverage_summary, write_coverage

    res = coverage(load_bundle(args.bundle), observations=args.observations, seed=args.seed,
                   figure=args.output.with_suffix(".png"))
    write_coverage(res, args.output.with_suffix(".json"))
    print(json.dumps(coverage_summary(res), indent=2))
    return 0 if res["passed"] else 1
