"""``dynmass check FILE``: validation report with figures for a catalog or observations file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dynmass._io import open_hdf5


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``check`` subcommand."""
    p = sub.add_parser(
        "check",
        help="validate a universe (catalog) or observations file against published relations",
        description="Validation report with figures. For a catalog: halo mass function vs "
        "Tinker et al. 2008, satellite velocity dispersion vs Evrard et al. 2008, halo "
        "clustering vs b(M)^2 xi_lin. For observations: interloper fraction vs radius and mass.",
    )
    p.add_argument("file", type=Path, help="catalog (universe.h5) or observations file")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="folder for the report and figures (default: FILE's name + '_check')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch on the file's ``dynmass_kind`` attribute."""
    with open_hdf5(args.file) as fh:
        kind = fh.attrs.get("dynmass_kind")
        kind = kind.decode() if isinstance(kind, bytes) else kind
    out = args.output or args.file.with_name(args.file.stem + "_check")
    if kind == "catalog":
        from dynmass.universe.validate import check_catalog_file

        result = check_catalog_file(args.file, out)
    elif kind == "observations":
        from dynmass.observe import check_observations_file

        result = check_observations_file(args.file, out)
    else:
        from dynmass.errors import InputError

        raise InputError(f"not a dynmass catalog or observations file (dynmass_kind={kind!r})",
                         path=args.file)
    print(json.dumps(result.get("summary", result), indent=2, default=str))
    print(f"report written to {out}")
    return 0 if result.get("passed", True) else 1
