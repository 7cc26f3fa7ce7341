"""Column checks shared by the catalog readers of :mod:`dynmass.readers`.

Every reader (:mod:`~dynmass.readers_um`, :mod:`~dynmass.readers_hlist`,
:mod:`~dynmass.readers_table`) passes the columns it reads through these helpers, so that bad
input fails the same way in every format with an :class:`~dynmass.errors.InputError` naming the
file and the column:

* :func:`_check_exists`: the file exists and is not empty;
* :func:`_finite`: no NaN or infinite values in a float column;
* :func:`_integers`: ids are integral (never silently truncated);
* :func:`_wrap_or_check`: positions lie in the periodic box ``[0, box)`` comoving Mpc/h, or are
  wrapped into it on request;
* :func:`_r200c`: the derived R200c column (comoving Mpc/h) of halos of mass M200c (Msun/h).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dynmass.errors import InputError


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError("no such file", path=path)
    if path.stat().st_size == 0:
        raise InputError("file is empty", path=path)


def _finite(arr: np.ndarray, path: Path, col: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InputError(
                f"{int(bad.sum())} non-finite (NaN or infinite) values, first at row "
                f"{int(np.flatnonzero(bad)[0])}", path=path, column=col)
    return arr


def _integers(arr: np.ndarray, path: Path, col: str) -> np.ndarray:
    """``arr`` as int64; non-integral values raise :class:`InputError` instead of truncating."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
        r = int(np.flatnonzero(arr != np.round(arr))[0])
        raise InputError(f"non-integer id at row {r} (value {arr[r]})", path=path, column=col)
    return arr.astype(np.int64)


def _wrap_or_check(pos: dict[str, np.ndarray], box: float, wrap: bool, path: Path,
                   names: dict) -> None:
    for c in ("x", "y", "z"):
        a = pos[c]
        if wrap:
            a = np.mod(a, box)
            a[a >= box] = 0.0
            pos[c] = a
        else:
            out = (a < 0) | (a >= box)
            if out.any():
                r = int(np.flatnonzero(out)[0])
                raise InputError(
                    f"{int(out.sum())} positions outside the box [0, {box}) Mpc/h, first at row "
                    f"{r} (value {a[r]}); pass wrap=True (--wrap) to wrap them periodically",
                    path=path, column=names.get(c, c))


def _r200c(m200c: np.ndarray, z: float, cosmo: dict[str, Any]) -> np.ndarray:
    from dynmass.universe.massfunction import r200c_comoving

    return r200c_comoving(m200c, z, cosmo)
