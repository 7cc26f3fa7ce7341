"""``dynmass predict-mock MODEL OBSERVATIONS -o preds.csv``: predict another observations file
with a trained model file or a cross-validation run folder (mean of its fold models)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict-mock`` subcommand."""
    p = sub.add_parser(
        "predict-mock",
        help="predict the views of an observations file with a trained model or run folder",
        description="Predict log10 M200c [Msun/h] of every view of OBSERVATIONS with MODEL: a "
        "model file (dynmass train --all) or a run folder (mean of the fold models). Writes "
        "halo_id,los,log10_m200c_true,log10_m200c_pred,n_gal (true masses NaN when unknown). "
        "The observations must share the training data's aperture and vcut.",
    )
    p.add_argument("model", type=Path, help="model file or run folder")
    p.add_argument("observations", type=Path, help="observations file")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output CSV (default: OBSERVATIONS stem + '_predictions.csv')")
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda", "mps"),
                   help="torch device for CNN models (default: the model's setting)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Predict and print where the table went."""
    from dynmass.train import predict_mock

    out = args.output or args.observations.with_name(args.observations.stem + "_predictions.csv")
    predict_mock(args.model, args.observations, out, device=args.device)
    print(f"predictions written to {out}")
    return 0
