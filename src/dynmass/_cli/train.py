"""``dynmass train OBSERVATIONS --model NAME -o RUN_DIR``: k-fold cross-validated training.

With ``--all`` one model is trained on every view and saved as a model file instead. Under
``torchrun --nproc_per_node N -m dynmass.cli train ...`` the CNNs train data-parallel (DDP).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dynmass.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = sub.add_parser(
        "train",
        help="k-fold cross-validated training of a mass model (folds split by halo)",
        description="Train a model with k-fold cross-validation split by halo (hosts ranked "
        "by M200c, fold = rank mod k; Ho et al. 2019). Writes OUTPUT/settings.json, "
        "fold_XX.h5, timing.json and predictions.csv (last). An interrupted run resumes "
        "when started again with the same arguments. With --all, trains one model on all "
        "views and writes a model file (OUTPUT, or OUTPUT/model.h5 for a folder).",
    )
    p.add_argument("observations", type=Path, help="observations file (dynmass observe)")
    p.add_argument("--model", default="cnn2d",
                   help="msigma, sdm, cnn1d, cnn2d, deepset (member lists), or a classical estimator: gapper_virial, "
                   "gapper_pme, clip_virial, clip_pme, gapper_msigma, caustic "
                   "(default: %(default)s)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="run folder (or model file with --all)")
    p.add_argument("--folds", type=int, default=10, help="number of folds (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="master seed (default: 0)")
    p.add_argument("--epochs", type=int, default=None, help="CNN: most epochs (paper: 20)")
    p.add_argument("--batch-size", type=int, default=None, help="CNN: batch size (paper: 50)")
    p.add_argument("--lr", type=float, default=None, help="CNN: Adam learning rate (1e-3)")
    p.add_argument("--patience", type=int, default=None,
                   help="CNN: early-stopping patience in epochs (0: none)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                   help="torch device for CNNs (default: auto)")
    p.add_argument("--no-resume", action="store_true",
                   help="delete an earlier run in OUTPUT instead of resuming it")
    p.add_argument("--all", action="store_true",
                   help="train one model on all views (no cross-validation)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any model setting, e.g. --set val_fraction=0.2 --set amp=off "
                   "(VALUE parsed as JSON when possible)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` to a dict; values parsed as JSON (numbers, true, null) if they
    can be, else kept as strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def run(args: argparse.Namespace) -> int:
    """Run cross-validation (or ``--all``) and print where the outputs went."""
    import os

    from dynmass.train import cross_validate, fit_all

    settings = parse_settings(args.set)
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                       ("lr", args.lr), ("patience", args.patience)):
        if value is not None:
            settings[key] = value
    rank0 = int(os.environ.get("RANK", "0")) == 0
    progress = not args.no_progress and rank0
    if args.all:
        out = args.output
        if out.is_dir() or str(out).endswith(os.sep) or out.suffix == "":
            out = out / "model.h5"
        fit_all(args.observations, args.model, out, seed=args.seed, model_settings=settings,
                device=args.device, resume=not args.no_resume, progress=progress)
        if rank0:
            print(f"model written to {out}")
        return 0
    out = cross_validate(args.observations, args.model, args.output, folds=args.folds,
                         seed=args.seed, model_settings=settings, device=args.device,
                         resume=not args.no_resume, progress=progress)
    if rank0:
        from dynmass.rundir import RunDir

        timing = RunDir(out).read_timing()
        print(f"run written to {out} (predictions.csv: {timing['n_predict_views']} views; "
              f"train {timing['train_seconds']:.1f} s, predict {timing['predict_seconds']:.2f} s)")
    return 0
