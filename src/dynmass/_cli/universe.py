"""``dynmass universe``: build the embedded mock universe, or convert a catalog users bring.

Two engines build a universe: ``--engine analytic`` (default; :mod:`dynmass.universe.build`)
and ``--engine nbody`` (a particle-mesh N-body run with FoF halos and painted galaxies,
:mod:`dynmass.universe.nbody`). Options of one engine given with the other are refused.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dynmass.errors import InputError

#: Options (argparse dests) of the analytic engine only, and of the nbody engine only.
_ANALYTIC_ONLY = {"min_mass": "--min-mass", "max_mass": "--max-mass", "grid": "--grid",
                  "zheng07_threshold": "--zheng07-threshold", "beta": "--beta",
                  "velocity_bias": "--velocity-bias", "conc_scatter": "--conc-scatter",
                  "mass_bin": "--mass-bin",
                  "no_unresolved_velocities": "--no-unresolved-velocities",
                  "outskirts": "--outskirts"}
_NBODY_ONLY = {"particles": "--particles", "pm_steps": "--pm-steps",
               "mesh_factor": "--mesh-factor", "halo_mass": "--halo-mass",
               "satellites_inside": "--satellites-inside"}


class _Explicit(argparse.Action):
    """Store the value and remember that the option was given (``args._explicit``)."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        given = set(getattr(namespace, "_explicit", set()))
        namespace._explicit = given | {self.dest}


def _flag(**kw) -> dict:
    """argparse keywords of a store-true flag whose use is remembered."""
    return dict(action=_Explicit, nargs=0, const=True, default=False, **kw)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``universe`` subcommand."""
    from dynmass.universe import (
        DEFAULT_BOX,
        DEFAULT_REDSHIFT,
        OCCUPATIONS,
        ZHENG07_DEFAULT_THRESHOLD,
    )

    p = sub.add_parser(
        "universe",
        help="build the embedded mock universe (or convert an external catalog) into a catalog file",
        description="Build a periodic mock universe: Tinker et al. 2008 halos on a biased "
        "log-normal field with linear-theory flows, Leauthaud et al. 2011 (or, with "
        "--occupation zheng07, Zheng et al. 2007) galaxies on NFW orbits with Jeans "
        "velocities. With --engine nbody, run a particle-mesh N-body simulation instead "
        "(jaxpm: 2LPT initial conditions, kick-drift-kick steps; friends-of-friends halos, "
        "galaxies painted on halos and particles; resumable from OUTPUT.pm.npz). With --from, "
        "convert a UniverseMachine, Rockstar hlist or generic table catalog instead.",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="catalog file to write (HDF5)")
    p.add_argument("--box", type=float, default=None,
                   help=f"box side, comoving Mpc/h (default {DEFAULT_BOX:g}; for --from: from the "
                   "file when it says)")
    p.add_argument("--redshift", type=float, default=None,
                   help=f"redshift (default {DEFAULT_REDSHIFT}; for --from: from the file)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--engine", choices=("analytic", "nbody"), default="analytic",
                   help="how the mock universe is made: analytic (default; halos from the mass "
                   "function on a log-normal field) or nbody (particle-mesh N-body run, FoF "
                   "halos; needs jaxpm; --box, --seed, --redshift, --cosmology, --occupation "
                   "and --mstar-min apply, the 'mock universe' options below do not)")
    nb = p.add_argument_group("nbody engine (--engine nbody)")
    nb.add_argument("--particles", type=int, default=256, action=_Explicit,
                    help="particles per side (default 256: 256^3 particles)")
    nb.add_argument("--pm-steps", type=int, default=30, action=_Explicit,
                    help="kick-drift-kick steps from a = 0.1 to the snapshot (default 30)")
    nb.add_argument("--mesh-factor", type=int, choices=(1, 2), default=2, action=_Explicit,
                    help="PM mesh cells per particle spacing (default 2; force resolution "
                    "box / (mesh-factor * particles))")
    nb.add_argument("--halo-mass", choices=("fof-abundance", "so"), default="fof-abundance",
                    action=_Explicit,
                    help="M200c of the halos: fof-abundance (default; the FoF mass mapped to "
                    "M200c by matched abundance of the Watson+13 FoF and Tinker+08 mass "
                    "functions) or so (spherical overdensity on the particles: 0.3-0.6 dex low "
                    "while the PM mesh does not resolve halo cores)")
    nb.add_argument("--satellites-inside", choices=("jeans", "particles"), default="jeans",
                    action=_Explicit,
                    help="satellites inside R200c: jeans (default; NFW profile with Jeans "
                    "velocities, as the PM halos are too cold inside) or particles (on the "
                    "halo's particles); beyond R200c galaxies sit on particles either way")
    g = p.add_argument_group("mock universe")
    g.add_argument("--min-mass", type=float, default=10**11.5, action=_Explicit,
                   help="lowest halo M200c, Msun/h (default 10^11.5)")
    g.add_argument("--max-mass", type=float, default=1e16, action=_Explicit,
                   help="highest halo M200c, Msun/h")
    g.add_argument("--grid", type=int, default=None, action=_Explicit,
                   help="FFT grid nodes per side (default: power of 2 >= box/4 Mpc/h, <= 512)")
    g.add_argument("--occupation", choices=OCCUPATIONS, default=OCCUPATIONS[0],
                   help="halo occupation model of the galaxies: leauthaud11 (default; Leauthaud "
                   "et al. 2011 stellar-mass threshold --mstar-min) or zheng07 (Zheng et al. "
                   "2007 r-band luminosity threshold --zheng07-threshold; galaxies without "
                   "stellar masses, no log10_mstar column). Same halos for the same seed")
    g.add_argument("--mstar-min", type=float, default=9.5,
                   help="galaxy stellar-mass threshold, log10 Msun, h-free (the cosmology's h "
                   "applied; default 9.5; leauthaud11)")
    g.add_argument("--zheng07-threshold", type=float, default=ZHENG07_DEFAULT_THRESHOLD,
                   action=_Explicit,
                   help="r-band absolute-magnitude threshold M_r - 5 log10 h of zheng07: -18 "
                   "to -22 in steps of 0.5, the Zheng et al. 2007 Table 1 values (default "
                   f"{ZHENG07_DEFAULT_THRESHOLD:g})")
    g.add_argument("--beta", type=float, default=0.0, action=_Explicit,
                   help="satellite velocity anisotropy, constant (default 0: isotropic)")
    g.add_argument("--velocity-bias", type=float, default=1.0, action=_Explicit,
                   help="satellite velocity bias sigma_gal/sigma_DM (default 1)")
    g.add_argument("--conc-scatter", type=float, default=0.16, action=_Explicit,
                   help="log-normal concentration scatter, dex (default 0.16)")
    g.add_argument("--mass-bin", type=float, default=0.1, action=_Explicit,
                   help="width of the mass bins placed with one bias, dex (default 0.1)")
    g.add_argument("--no-unresolved-velocities", **_flag(),
                   help="do not add the sub-grid linear velocity dispersion to halo velocities")
    g.add_argument("--outskirts", **_flag(
        help="N-body-like halos (off by default): satellites beyond R200c on a "
        "Diemer & Kravtsov 2014 splashback profile to 4 R200c (added to those within "
        "R200c), triaxial halos (Allgood et al. 2006) with aligned velocity "
        "ellipsoids, and infall velocities measured on the N-body engine for the halos "
        "around hosts above 10^13.5 Msun/h"))
    x = p.add_argument_group("convert an external catalog")
    x.add_argument("--from", dest="source", type=Path, default=None, help="catalog file to convert")
    x.add_argument("--format", choices=("universemachine", "universemachine-bin", "hlist", "table"),
                   default=None, help="format of --from")
    x.add_argument("--columns", default=None,
                   help="column mapping for --format table: NAME=COLUMN,... (prefix halos./galaxies.)")
    x.add_argument("--galaxies", type=Path, default=None,
                   help="galaxy table for --format table when --from holds only halos")
    x.add_argument("--units", default=None,
                   help="input units for --format table, e.g. position=kpc/h,mass=Msun")
    x.add_argument("--wrap", action="store_true", help="wrap positions outside the box")
    x.add_argument("--hlist-galaxies", choices=("subhalos", "hod"), default="subhalos",
                   help="hlist: galaxies at subhalos, or populated with the dynmass HOD")
    x.add_argument("--cosmology", default=None,
                   help="JSON dict of cosmological parameters (default MDPL2 or the file's)")
    p.set_defaults(func=run)


def _parse_cosmology(text: str | None) -> dict | None:
    """``--cosmology`` JSON to a dict; a clear :class:`InputError` when it is not one."""
    if not text:
        return None
    try:
        cosmo = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--cosmology is not valid JSON: {exc}", column="cosmology") from exc
    if not isinstance(cosmo, dict):
        raise InputError("--cosmology must be a JSON object, e.g. '{\"H0\": 67.77, "
                         "\"Om0\": 0.307}'", column="cosmology")
    return cosmo


def _parse_units(text: str | None) -> dict[str, str] | None:
    """``position=kpc/h,mass=Msun`` to a dict; a clear :class:`InputError` when malformed."""
    if not text:
        return None
    items = [i.split("=", 1) for i in text.split(",") if i.strip()]
    if any(len(i) != 2 for i in items):
        raise InputError(f"--units expects KIND=UNIT,... (e.g. position=kpc/h,mass=Msun), "
                         f"not {text!r}", column="units")
    return {k.strip(): v.strip() for k, v in items}


def run(args: argparse.Namespace) -> int:
    """Build or convert, write the catalog, print a one-line JSON summary."""
    from dynmass.universe import DEFAULT_BOX, DEFAULT_REDSHIFT, OCCUPATIONS
    from dynmass.universe.build import write_universe

    cosmo = _parse_cosmology(args.cosmology)
    t0 = time.perf_counter()
    engine = getattr(args, "engine", "analytic")
    _check_engine_options(args, engine)
    if engine == "nbody":
        from dynmass.universe.nbody import write_nbody_universe

        info = write_nbody_universe(
            args.output,
            box_size=DEFAULT_BOX if args.box is None else args.box,
            n_side=args.particles,
            redshift=DEFAULT_REDSHIFT if args.redshift is None else args.redshift,
            cosmology=cosmo, seed=args.seed, occupation=args.occupation,
            mstar_min=args.mstar_min, mesh_factor=args.mesh_factor, n_steps=args.pm_steps,
            halo_mass=args.halo_mass, satellites_inside=args.satellites_inside,
        )
        summary = {"output": str(args.output), "engine": "nbody", "n_halos": info["n_halos"],
                   "n_galaxies": info["n_galaxies"], "checkpoint": info["checkpoint"]}
    elif args.source is None:
        info = write_universe(
            args.output,
            box_size=DEFAULT_BOX if args.box is None else args.box,
            redshift=DEFAULT_REDSHIFT if args.redshift is None else args.redshift,
            cosmology=cosmo, seed=args.seed, min_mass=args.min_mass, max_mass=args.max_mass,
            grid=args.grid, mstar_min=args.mstar_min, beta=args.beta,
            velocity_bias=args.velocity_bias, conc_scatter_dex=args.conc_scatter,
            mass_bin_dex=args.mass_bin, unresolved_velocities=not args.no_unresolved_velocities,
            occupation=args.occupation, zheng07_threshold=args.zheng07_threshold,
            outskirts=args.outskirts,
        )
        summary = {"output": str(args.output), "n_halos": info["n_halos"],
                   "n_galaxies": info["n_galaxies"]}
    else:
        from dynmass.catalog import write_catalog
        from dynmass.readers import read_external

        if args.format is None:
            raise InputError("--from needs --format", path=args.source)
        if args.outskirts:
            raise InputError("--outskirts applies to the mock universe, not to --from",
                             column="outskirts")
        if args.occupation != OCCUPATIONS[0]:
            raise InputError(f"--occupation {args.occupation} applies to the mock universe, "
                             "not to --from (--hlist-galaxies hod uses leauthaud11)",
                             column="occupation")
        kw: dict = {"box_size": args.box, "redshift": args.redshift, "cosmology": cosmo,
                    "wrap": args.wrap}
        if args.format == "table":
            kw.update(columns=args.columns, galaxies_path=args.galaxies,
                      units=_parse_units(args.units))
        elif args.format == "hlist":
            kw.update(galaxies=args.hlist_galaxies, mstar_min=args.mstar_min, seed=args.seed)
        cat = read_external(args.source, args.format, **kw)
        write_catalog(cat, args.output)
        summary = {"output": str(args.output), "n_halos": cat.n_halos, "n_galaxies": cat.n_galaxies}
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(summary))
    return 0


def _check_engine_options(args: argparse.Namespace, engine: str) -> None:
    """Refuse options of the other engine (clear :class:`InputError`, never ignored)."""
    given = getattr(args, "_explicit", set())
    if engine == "nbody":
        if args.source is not None:
            raise InputError("--engine nbody builds a universe; it does not apply to --from",
                             column="engine")
        wrong = [opt for dest, opt in _ANALYTIC_ONLY.items() if dest in given]
        if wrong:
            raise InputError(f"{', '.join(wrong)} apply to the analytic engine only, not to "
                             "--engine nbody (its halos come from the N-body run: see "
                             "--particles, --pm-steps, --mesh-factor)", column="engine")
        if args.particles < 8 or args.pm_steps < 1:
            raise InputError(f"--particles {args.particles} must be >= 8 and --pm-steps "
                             f"{args.pm_steps} >= 1", column="engine")
    else:
        wrong = [opt for dest, opt in _NBODY_ONLY.items() if dest in given]
        if wrong:
            raise InputError(f"{', '.join(wrong)} apply to --engine nbody only",
                             column="engine")
