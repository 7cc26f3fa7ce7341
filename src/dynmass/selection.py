"""Galaxy selection by a property column: which galaxies a survey can target at all.

A selection is a galaxy column of the catalog and a limit (fields ``selection_column`` and
``selection_limit`` of :class:`dynmass.observing.ObservingSetup`). The sense of the limit
follows from the column (:func:`selection_sense`):

* a magnitude column (name starting with ``mag``, ``absmag`` or ``abs_mag``, e.g. ``mag_r``):
  galaxies **brighter** than the limit are kept, ``value <= limit`` (magnitudes);
* any other column, e.g. ``log10_mstar`` (log10 M* in Msun, h-free; see
  :mod:`dynmass.stellar_mass`): galaxies **above** the limit are kept, ``value >= limit``
  (a stellar-mass-limited sample).

The limit is a number or a :class:`~dynmass.observing.Draw` drawn anew for every view from
that view's own seeded stream (purpose ``SEED_SELECTION`` of :mod:`dynmass._observe_kernels`),
like the survey settings. The selection is applied to every galaxy of a view's candidates
before the survey (sampling, completeness, velocity errors, targets): a galaxy the survey
cannot select is never observed. Observations record it in their settings (the two keys,
absent when there is no selection) and the limit of each view in the cluster column
``survey_selection_limit``.

Examples
--------
>>> import numpy as np
>>> parse_selection("log10_mstar:10.0")
('log10_mstar', 10.0)
>>> parse_selection("mag_r:uniform:-21:-20")
('mag_r', Draw(dist='uniform', lo=-21.0, hi=-20.0))
>>> selection_sense("log10_mstar"), selection_sense("mag_r")
('>=', '<=')
>>> keep_mask("log10_mstar", np.array([9.8, 10.0, 10.4]), np.full(3, 10.0)).tolist()
[False, True, True]
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from dynmass.errors import InputError

log = logging.getLogger("dynmass.selection")

__all__ = ["MAGNITUDE_PREFIXES", "check_selection", "check_selection_column", "keep_mask",
           "parse_selection", "selection_sense", "view_limits"]

#: Galaxy columns whose name starts with one of these (case-insensitive) are magnitudes.
MAGNITUDE_PREFIXES = ("mag", "absmag", "abs_mag")


def selection_sense(column: str) -> str:
    """``"<="`` (brighter than: magnitudes) or ``">="`` (above: masses, anything else).

    Parameters
    ----------
    column : str
        Galaxy column name.

    Returns
    -------
    str
    """
    return "<=" if str(column).lower().startswith(MAGNITUDE_PREFIXES) else ">="


def keep_mask(column: str, values: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """The galaxies that pass the selection: ``values >= limits`` (``<=`` for magnitudes).

    Parameters
    ----------
    column : str
        Galaxy column name (gives the sense, :func:`selection_sense`).
    values : numpy.ndarray
        The column's values of the galaxies, in its unit (log10 Msun for ``log10_mstar``).
    limits : numpy.ndarray
        The limit each galaxy is held to (its view's), same unit, broadcast with ``values``.

    Returns
    -------
    numpy.ndarray of bool
    """
    values, limits = np.asarray(values, dtype=float), np.asarray(limits, dtype=float)
    return values <= limits if selection_sense(column) == "<=" else values >= limits


def parse_selection(spec: str) -> tuple[str, Any]:
    """``"COLUMN:LIMIT"`` (``LIMIT`` a number or ``uniform:LO:HI`` / ``loguniform:LO:HI``).

    Parameters
    ----------
    spec : str
        The selection as given on the command line, e.g. ``"log10_mstar:10.0"``.

    Returns
    -------
    (str, float or Draw)
        Column and limit.
    """
    from dynmass.observing import Draw

    column, _, limit = str(spec).partition(":")
    if not column or not limit:
        raise InputError(f"selection '{spec}' must be 'COLUMN:LIMIT', e.g. 'log10_mstar:10.0' "
                         "or 'log10_mstar:uniform:9.5:10.5'", column="selection_column")
    try:
        return column, Draw.parse(limit)
    except InputError as exc:
        raise InputError(f"selection '{spec}': {exc}", column="selection_limit") from None


def check_selection(column: Any, limit: Any) -> None:
    """Raise :class:`~dynmass.errors.InputError` for a selection outside its sense.

    Both ``None`` (no selection), or a non-empty column name and a finite number or a
    :class:`~dynmass.observing.Draw`.

    Parameters
    ----------
    column : str or None
        Galaxy column to select on.
    limit : float, Draw or None
        The limit, in the column's unit.
    """
    from dynmass.observing import Draw

    if column is None and limit is None:
        return
    if column is None or limit is None:
        raise InputError(f"selection_column={column!r} and selection_limit={limit!r}: give "
                         "both or neither", column="selection_column" if column is None
                         else "selection_limit")
    if not isinstance(column, str) or not column.strip() or column != column.strip():
        raise InputError(f"selection_column={column!r} must be a galaxy column name",
                         column="selection_column")
    ok = isinstance(limit, Draw) or (
        isinstance(limit, (int, float, np.integer, np.floating)) and not isinstance(limit, bool)
        and bool(np.isfinite(limit)))
    if not ok:
        raise InputError(f"selection_limit={limit!r} must be a finite number or a Draw",
                         column="selection_limit")


def check_selection_column(galaxies: dict[str, np.ndarray], column: str, limit: Any,
                           path: object = None) -> None:
    """Raise :class:`~dynmass.errors.InputError` when ``column`` is not a galaxy column, or
    when no galaxy of the catalog passes even the loosest limit ``limit`` can take.

    Parameters
    ----------
    galaxies : dict of str to numpy.ndarray
        Galaxy columns of the catalog.
    column : str
        Selection column.
    limit : float or Draw
        Selection limit (the column's unit).
    path : optional
        The catalog file, for messages.
    """
    from dynmass.observing import value_range

    if column not in galaxies:
        have = sorted(c for c in galaxies if c not in ("x", "y", "z", "vx", "vy", "vz"))
        raise InputError(f"the selection column is not a galaxy column of this catalog "
                         f"(it has {have})", path=path, column=f"galaxies/{column}")
    values = np.asarray(galaxies[column], dtype=float)
    lo, hi = value_range(limit)
    loosest = hi if selection_sense(column) == "<=" else lo
    if not np.any(keep_mask(column, values, loosest)):
        span = f"[{values.min():g}, {values.max():g}]" if values.size else "empty"
        raise InputError(f"selection {column} {selection_sense(column)} {limit} removes every "
                         f"galaxy (the column spans {span})", path=path,
                         column="selection_limit")
    if np.all(keep_mask(column, values, loosest)):
        edge = values.max() if selection_sense(column) == "<=" else values.min()
        log.warning("selection %s %s %s: the catalog has no galaxy beyond %g (it was cut "
                    "there), so views with looser limits see the same galaxies", column,
                    selection_sense(column), limit, edge)


def view_limits(selection: dict[str, Any] | None, halo_rows: np.ndarray,
                los_index: np.ndarray, rng: Any) -> np.ndarray:
    """The selection limit of each view: NaN without a selection, the fixed limit, or a draw.

    Parameters
    ----------
    selection : dict or None
        ``{"selection_column", "selection_limit"}`` as in observe settings (the limit a
        number or a :class:`~dynmass.observing.Draw` in its JSON form), or None.
    halo_rows, los_index : numpy.ndarray
        Halo row and line-of-sight index of each view.
    rng : callable
        ``rng(halo_row, los)`` -> the view's :class:`numpy.random.Generator` for this purpose
        (one draw each, from the view's own stream).

    Returns
    -------
    numpy.ndarray
        One limit per view, in the column's unit.
    """
    from dynmass.observing import Draw

    limit = None if selection is None else Draw.parse(selection["selection_limit"])
    if not isinstance(limit, Draw):
        return np.full(len(halo_rows), np.nan if limit is None else float(limit))
    return np.array([limit.sample(rng(h, los)) for h, los in zip(halo_rows, los_index,
                                                                  strict=True)], dtype=float)
