"""``dynmass observe``: mock observations (cylinders with interlopers) of a universe file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``observe`` subcommand."""
    from dynmass.observe import FLAT_BIN_DEX, FLAT_DENSITY, MAX_LOS
    from dynmass.observing import CENTER_MODES, PRESETS

    presets = ", ".join(f"{k}={a}/{v:g}" for k, (a, v) in PRESETS.items())
    p = sub.add_parser(
        "observe",
        help="mock observations: every galaxy in a cylinder along each cluster's line of sight",
        description="Cut cylinders (projected radius <= aperture, |v| <= vcut, Hubble flow plus "
        "peculiar velocity, periodic box) around every host halo above --min-mass along its "
        "lines of sight, members and interlopers alike (Ho et al. 2019). Presets "
        f"(aperture Mpc/h / vcut km/s): {presets}.",
    )
    p.add_argument("universe", type=Path, help="catalog file (universe.h5)")
    p.add_argument("-o", "--output", type=Path, required=True, help="observations file to write")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                   help="named aperture/vcut pair (default: paper = 1.6 Mpc/h, 2200 km/s)")
    p.add_argument("--aperture", type=float, default=None,
                   help="cylinder radius, projected comoving Mpc/h (overrides the preset)")
    p.add_argument("--vcut", type=float, default=None,
                   help="velocity cut |v| <= vcut, km/s (overrides the preset)")
    p.add_argument("--min-mass", type=float, default=10**13.5,
                   help="observe hosts with M200c >= this, Msun/h (default 10^13.5)")
    p.add_argument("--min-members", type=int, default=10,
                   help="drop views with fewer galaxies (default 10)")
    los = p.add_mutually_exclusive_group()
    los.add_argument("--n-los", type=int, default=None,
                     help="lines of sight per host: x, y, z, then rotated Fibonacci (default 3)")
    los.add_argument("--flat-mass-function", action="store_true",
                     help="more views of massive hosts, crowded mass bins thinned: views near "
                     "flat in log M (3 per host at least)")
    p.add_argument("--flat-target", type=int, default=None,
                   help="views per mass bin with --flat-mass-function (default: "
                   f"{FLAT_DENSITY:.3g} (Mpc/h)^-3 dex^-1 x box volume x bin width)")
    p.add_argument("--flat-bin-dex", type=float, default=FLAT_BIN_DEX,
                   help=f"mass bin width for --flat-mass-function, dex (default {FLAT_BIN_DEX})")
    p.add_argument("--max-los", type=int, default=MAX_LOS,
                   help=f"most views per host with --flat-mass-function (default {MAX_LOS})")
    p.add_argument("--sampling-rate", default="1",
                   help="target each galaxy with this probability (default 1), or draw it per "
                   "view: 'loguniform:0.05:1' or 'uniform:LO:HI'")
    p.add_argument("--completeness-edge", default="1",
                   help="completeness at the aperture relative to the centre, falling linearly "
                   "with radius (default 1: flat); a number or 'uniform:LO:HI'")
    p.add_argument("--n-targets", type=int, default=None,
                   help="at most this many galaxies of each cylinder get a redshift (random)")
    p.add_argument("--velocity-error", default="0",
                   help="Gaussian error of each line-of-sight velocity, km/s (default 0); a "
                   "number or 'uniform:LO:HI'")
    p.add_argument("--selection", default=None, metavar="COLUMN:LIMIT",
                   help="observe only galaxies passing a limit in a galaxy property column: "
                   "'log10_mstar:10.0' keeps log10 M* >= 10.0 (M* in Msun, h-free); for a "
                   "magnitude column (name mag*, absmag*, abs_mag*) galaxies brighter than "
                   "the limit (value <= LIMIT); the limit may be drawn per view: "
                   "'log10_mstar:uniform:9.5:10.5'. Applied before the survey settings "
                   "(default: no selection)")
    p.add_argument("--center", choices=CENTER_MODES, default="true",
                   help="true halo centre, or an observer's estimate from the galaxies (the "
                   "algorithm of dynmass predict)")
    p.add_argument("--training-redshift", type=float, default=None, metavar="Z",
                   help="observe in the self-similar frame of a model trained at redshift Z, as "
                   "dynmass predict sees a real cluster at this universe's redshift: comoving "
                   "aperture x (1+z) E(Z) / ((1+Z) E(z)) and radii divided by that factor "
                   "(default: the plain comoving aperture)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random step (default 0)")
    dask = p.add_mutually_exclusive_group()
    dask.add_argument("--workers", type=int, default=None,
                      help="run on a local Dask cluster of N worker processes")
    dask.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                      help="run on this Dask scheduler (e.g. tcp://host:8786)")
    p.add_argument("--chunk-size", type=int, default=500,
                   help="views per chunk (results do not depend on it; default 500)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Observe ``args.universe`` and write ``args.output``; print a short summary."""
    from dynmass.observations import observation_attrs
    from dynmass.observe import observe_file
    from dynmass.observing import ObservingSetup
    from dynmass.selection import parse_selection

    column, limit = (None, None) if args.selection is None else parse_selection(args.selection)
    setup = ObservingSetup.preset(
        args.preset, aperture=args.aperture, vcut=args.vcut, min_members=args.min_members,
        sampling_rate=args.sampling_rate, center=args.center,
        completeness_edge=args.completeness_edge, n_targets=args.n_targets,
        velocity_error=args.velocity_error, selection_column=column, selection_limit=limit)
    path = observe_file(
        args.universe, args.output, setup=setup, min_mass=args.min_mass,
        n_los=3 if args.n_los is None else args.n_los,
        flat_mass_function=args.flat_mass_function, flat_target=args.flat_target,
        flat_bin_dex=args.flat_bin_dex, max_los=args.max_los, seed=args.seed,
        workers=args.workers, dask_scheduler=args.dask_scheduler,
        chunk_size=args.chunk_size, progress=args.progress,
        **({} if args.training_redshift is None else {"training_redshift": args.training_redshift}),
    )
    s = observation_attrs(path)["settings"]
    print(json.dumps({k: s[k] for k in ("aperture", "vcut", "n_hosts", "n_views_planned",
                                        "n_views", "n_views_dropped", "los_half_depth")}))
    print(f"{s['n_views']} views written to {path} ({s['n_views_dropped']} dropped with fewer "
          f"than {s['min_members']} galaxies)")
    return 0
