"""``dynmass predict MEMBERS``: masses of real clusters from their member galaxies."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    p = sub.add_parser(
        "predict",
        help="masses (log10 M200c with 68%% and 95%% intervals) of real clusters from members",
        description="Members as RA, Dec [deg] and z (or R [comoving Mpc/h] and v [km/s]), one "
        "or many clusters (cluster_id column), in CSV, ECSV, FITS or Parquet. The centre is "
        "given or estimated from the members (biweight redshift, median sky position). The "
        "model's training cuts (aperture, vcut) and cosmology are applied. Writes one row per "
        "cluster with percentiles 2.5/16/50/84/97.5 of log10 M200c [Msun/h and Msun], flags "
        "for clusters outside the training domain, and an error column for clusters that "
        "could not be estimated. Clusters whose redshift lies outside the model's validated "
        "redshift range (its training redshift +/- 0.05 for a single-snapshot model) get no "
        "mass unless --allow-extrapolation is given.",
    )
    p.add_argument("members", type=Path, help="table of member galaxies")
    grp = p.add_mutually_exclusive_group()
    grp.add_argument("--center", nargs=3, type=float, metavar=("RA", "DEC", "Z"),
                     help="centre of the (single) cluster: RA, Dec [deg], redshift")
    grp.add_argument("--centers", type=Path, metavar="FILE",
                     help="table of centres with columns cluster_id, ra, dec, z")
    p.add_argument("--model", type=Path, default=None,
                   help="model bundle (from `dynmass bundle`); default: the shipped model")
    p.add_argument("--cosmology", default=None,
                   help="'H0,Om0' or an astropy name (Planck18, WMAP9, ...) or MDPL2; "
                   "default: the model's training cosmology")
    p.add_argument("--ra-col", default="ra", help="RA column [deg] (default: ra)")
    p.add_argument("--dec-col", default="dec", help="Dec column [deg] (default: dec)")
    p.add_argument("--z-col", default="z", help="redshift column (default: z)")
    p.add_argument("--cluster-col", default="cluster_id",
                   help="cluster id column (default: cluster_id; absent = one cluster)")
    p.add_argument("--r-col", default="R", help="projected radius column [comoving Mpc/h]")
    p.add_argument("--v-col", default="v", help="LOS velocity column [km/s]")
    p.add_argument("--min-members", type=int, default=None,
                   help="flag clusters with fewer galaxies (default: the training minimum)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="drop members with missing/out-of-range values instead of refusing "
                   "their cluster")
    p.add_argument("--allow-extrapolation", action="store_true",
                   help="also estimate clusters whose redshift lies outside the model's "
                   "validated redshift range; their masses are not validated and are flagged "
                   "extrapolated_redshift (default: such clusters get no mass and an error)")
    p.add_argument("--redshift-frame", choices=("self-similar", "fixed"), default="self-similar",
                   help="match a cluster at z to the training redshift by the self-similar "
                   "aperture, comoving radius x (1+z) E(z_train) / ((1+z_train) E(z)), with radii "
                   "rescaled by the same factor (default), or by the fixed training aperture; "
                   "both add the E(z) mass term")
    p.add_argument("--survey", nargs="+", default=None, metavar="NAME=VALUE",
                   help="declare the survey that produced the members to get the survey-aware "
                        "mass too (columns log10_m200c_survey_*): sampling_rate (fraction of "
                        "the selected galaxies targeted), completeness_edge (completeness at "
                        "the aperture relative to the centre), selection_limit (log10 M* "
                        "[Msun]), velocity_error [km/s]; redshift is the cluster's (declare "
                        "redshift=Z for clusters given as R, v)")
    p.add_argument("--posterior", type=Path, default=None,
                   help="survey-aware posterior of --model (dynmass posterior --survey-inputs);"
                        " default: the shipped one, for the shipped model")
    p.add_argument("-o", "--output", type=Path, default=Path("masses.csv"),
                   help="output CSV (default: masses.csv); settings go to <stem>.settings.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run :func:`dynmass.predict.predict_file`; exit 1 if any cluster failed."""
    from dynmass.predict import predict_file

    result = predict_file(
        args.members, args.output, model=args.model,
        centers=tuple(args.center) if args.center else args.centers,
        cosmology=args.cosmology, ra_col=args.ra_col, dec_col=args.dec_col, z_col=args.z_col,
        cluster_col=args.cluster_col, r_col=args.r_col, v_col=args.v_col,
        min_members=args.min_members, skip_bad_rows=args.skip_bad_rows,
        allow_extrapolation=args.allow_extrapolation, redshift_frame=args.redshift_frame,
        survey=args.survey, posterior=args.posterior,
    )
    n_err = int(sum(bool(e) for e in result["error"]))
    n_flag = int(sum(bool(f) for f in result["flags"]))
    print(f"{len(result)} clusters: {len(result) - n_err} estimated ({n_flag} flagged), "
          f"{n_err} failed; written to {args.output}")
    for row in result:
        if row["error"]:
            print(f"  cluster {row['cluster_id']}: {row['error']}")
    return 1 if n_err else 0
