"""``dynmass combine OBS... -o OUT``: views of several universes in one observations file."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``combine`` subcommand."""
    p = sub.add_parser(
        "combine",
        help="combine observations of several universes (observed alike) into one file",
        description="Concatenates observations files observed with the same survey settings, "
        "snapshot redshift and cosmology, from distinct universes (e.g. the default engine and "
        "`universe --outskirts`), so that one model trains on a mixture of skies. Halo ids of "
        "file k are offset by k x 10^12 (folds stay split by halo), the cluster column 'part' "
        "says which file a view came from, and the settings list every universe "
        "(universes_sha256), so calibration and coverage checks refuse views of any of them.",
    )
    p.add_argument("observations", type=Path, nargs="+",
                   help="two or more observations files (dynmass observe)")
    p.add_argument("-o", "--output", type=Path, required=True, help="combined observations file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Combine and write; print a one-line summary."""
    from dynmass.combine import combine_files

    obs = combine_files(args.observations, args.output)
    parts = ", ".join(f"{r['n_views']} from {r['path']}" for r in obs.settings["combined_from"])
    print(f"{args.output}: {obs.n_views} views ({parts})")
    return 0
