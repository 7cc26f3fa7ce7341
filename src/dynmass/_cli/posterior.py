"""``dynmass posterior BUNDLE``: a normalizing-flow posterior of log10 M200c, checked by SBC/TARP."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dynmass.survey_inputs import SURVEY_INPUTS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``posterior`` subcommand."""
    p = sub.add_parser(
        "posterior",
        help="fit p(log10 M200c | ensemble mean, N) with a normalizing flow; check it by "
        "coverage, SBC and TARP on independent views",
        description="Trains a conditional neural spline flow (zuko) on the bundle's fold-"
        "ensemble predictions of --calibrate-on views (independent universes, observed like "
        "the training views; views at other redshifts in the self-similar frame), then "
        "evaluates its 68%/95% coverage per bin of true and predicted mass, SBC ranks and "
        "TARP on --test-on views, next to the bundle's Neyman belts on the same views. Writes "
        "OUTPUT.h5 (the flow), OUTPUT.json and OUTPUT.png.",
    )
    p.add_argument("bundle", type=Path, help="model bundle (dynmass bundle)")
    p.add_argument("--calibrate-on", type=Path, nargs="+", required=True, metavar="OBS",
                   help="observations of independent universes to train the flow on")
    p.add_argument("--test-on", type=Path, nargs="+", required=True, metavar="OBS",
                   help="observations of further independent universes to check it on")
    p.add_argument("-o", "--output", type=Path, required=True, help="output stem")
    p.add_argument("--epochs", type=int, default=60, help="most training epochs (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--n-flows", type=int, default=1,
                   help="flows in a deep ensemble, each with seed SEED+k, densities averaged "
                        "(default 1)")
    p.add_argument("--survey-inputs", nargs="+", default=[], metavar="NAME",
                   choices=list(SURVEY_INPUTS),
                   help="make the flow survey-aware: condition it on these survey settings "
                        "too, read per view from the observations (" + ", ".join(SURVEY_INPUTS)
                        + "); dynmass predict then needs them declared (--survey)")
    p.add_argument("--occupation-dex", type=float, default=0.0, metavar="DEX",
                   help="how well the galaxies per cylinder at fixed mass are known relative "
                        "to the mocks' occupation: a Gaussian offset of this width [dex] is "
                        "added to log10 N of every training view, so the flow marginalises "
                        "over it (default 0: the mocks' occupation is the sky's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fit, evaluate, write; print the summary; exit 1 when the flow's 68%/95% coverage misses
    68 +/- 2 or 95 +/- 2 (issue 14's posterior target)."""
    from dynmass.bundle import load_bundle
    from dynmass.posterior_check import posterior_check

    res = posterior_check(load_bundle(args.bundle), args.calibrate_on, args.test_on,
                          args.output, epochs=args.epochs, seed=args.seed,
                          n_flows=args.n_flows, survey_inputs=args.survey_inputs,
                          occupation_dex=args.occupation_dex)
    print(json.dumps(res["summary"], indent=2))
    return 0 if res["summary"]["passed"] else 1
