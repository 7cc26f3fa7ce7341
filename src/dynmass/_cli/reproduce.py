"""``dynmass reproduce``: the paper's comparison end to end on the embedded mock universe."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``reproduce`` subcommand."""
    p = sub.add_parser(
        "reproduce",
        help="universe -> observe -> train msigma, sdm, cnn1d, cnn2d -> evaluate, vs the paper",
        description="Run the whole method on the embedded mock universe and print the comparison "
        "with Ho et al. 2019. Stages whose output exists are skipped (resume).",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("reproduce"), help="output folder")
    p.add_argument("--quick", action="store_true", help="the demo form (minutes on 2 cores)")
    p.add_argument("--seed", type=int, default=0, help="master seed")
    p.add_argument("--box", type=float, default=None, help="box side, comoving Mpc/h")
    p.add_argument("--folds", type=int, default=None, help="cross-validation folds")
    p.add_argument("--models", default=None,
                   help="comma-separated models (default msigma,sdm,cnn1d,cnn2d)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, mps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the reproduction."""
    from dynmass.reproduce import ReproduceSettings, reproduce

    models = tuple(args.models.split(",")) if args.models else None
    settings = ReproduceSettings.preset(args.quick, seed=args.seed, box_size=args.box,
                                        folds=args.folds, models=models, device=args.device)
    reproduce(args.output, settings)
    print(f"report: {args.output / 'report' / 'report.html'}")
    return 0
