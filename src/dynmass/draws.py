"""A survey setting drawn anew for every view (:class:`Draw`), and the range a setting spans.

The survey model (:mod:`dynmass.observing`) takes each survey setting either as a fixed number
or as a :class:`Draw`; :func:`value_range` and :func:`inside` compare such settings.

Examples
--------
>>> inside(1.0, Draw("loguniform", 0.05, 1.0)), inside(Draw("uniform", 0, 2), 1.0)
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dynmass.errors import InputError

__all__ = ["Draw", "inside", "value_range"]

_DISTS = ("uniform", "loguniform")


@dataclass(frozen=True)
class Draw:
    """A survey setting drawn anew for every view: uniform or log-uniform in ``[lo, hi]``.

    Parameters
    ----------
    dist : {"uniform", "loguniform"}
        Distribution of the value (log-uniform: uniform in log10).
    lo, hi : float
        Range of the value, in the unit of the setting (``lo <= hi``; ``lo > 0`` for
        log-uniform).

    Examples
    --------
    >>> import numpy as np
    >>> d = Draw.parse("loguniform:0.05:1")
    >>> d, bool(0.05 <= d.sample(np.random.default_rng(0)) <= 1)
    (Draw(dist='loguniform', lo=0.05, hi=1.0), True)
    """

    dist: str
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if self.dist not in _DISTS:
            raise InputError(f"distribution {self.dist!r} must be one of {_DISTS}",
                             column="dist")
        if not (_is_number(self.lo) and _is_number(self.hi) and self.lo <= self.hi):
            raise InputError(f"range [{self.lo}, {self.hi}] must be finite with lo <= hi",
                             column="dist")
        if self.dist == "loguniform" and self.lo <= 0:
            raise InputError(f"log-uniform range must be positive, not [{self.lo}, {self.hi}]",
                             column="dist")
        object.__setattr__(self, "lo", float(self.lo))
        object.__setattr__(self, "hi", float(self.hi))

    @classmethod
    def parse(cls, spec: Any) -> float | Draw:
        """A number, a :class:`Draw`, ``"dist:lo:hi"`` or ``{"dist", "lo", "hi"}``.

        Parameters
        ----------
        spec : float, str, dict or Draw
            The setting as given on the command line or in a settings file.

        Returns
        -------
        float or Draw
            Numbers stay numbers.
        """
        if isinstance(spec, Draw):
            return spec
        if isinstance(spec, dict):
            return cls(str(spec.get("dist")), spec.get("lo"), spec.get("hi"))
        if isinstance(spec, str):
            parts = spec.split(":")
            try:
                if len(parts) == 1:
                    return float(parts[0])
                if len(parts) == 3:
                    return cls(parts[0], float(parts[1]), float(parts[2]))
            except ValueError:
                pass
            raise InputError(f"'{spec}' is neither a number nor 'uniform:LO:HI' / "
                             "'loguniform:LO:HI'", column="dist")
        return spec

    def sample(self, rng: np.random.Generator) -> float:
        """One value.

        Parameters
        ----------
        rng : numpy.random.Generator
            The view's random stream.

        Returns
        -------
        float
        """
        u = rng.random()
        if self.dist == "uniform":
            return self.lo + (self.hi - self.lo) * u
        return float(10 ** (np.log10(self.lo) + (np.log10(self.hi) - np.log10(self.lo)) * u))

    def to_json(self) -> dict[str, Any]:
        """``{"dist", "lo", "hi"}``."""
        return {"dist": self.dist, "lo": self.lo, "hi": self.hi}


def value_range(x: float | Draw) -> tuple[float, float]:
    """``(lo, hi)`` a setting can take (a fixed value: both ends).

    Parameters
    ----------
    x : float or Draw
        A survey setting.

    Returns
    -------
    tuple of float
    """
    return (x.lo, x.hi) if isinstance(x, Draw) else (float(x), float(x))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) \
        and bool(np.isfinite(x))


def inside(x: float | Draw | None, y: float | Draw | None) -> bool:
    """Setting ``x`` (a number or :class:`Draw`) lies in the range of ``y`` (the same).

    Parameters
    ----------
    x, y : float, Draw or None
        Survey settings; None (not set) is inside None only.

    Returns
    -------
    bool
        True when ``value_range(x)`` lies within ``value_range(y)`` (relative tolerance 1e-6).
    """
    if x is None or y is None:
        return x is None and y is None
    (lo, hi), (ylo, yhi) = value_range(x), value_range(y)
    tol = 1e-6 * max(1.0, abs(ylo), abs(yhi))
    return ylo - tol <= lo and hi <= yhi + tol
