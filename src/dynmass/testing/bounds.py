"""Bounds for tests of random experiments, set from their measured spread over seeds.

A test that trains a model or checks a statistic of random draws cannot assert an exact value:
the statistic moves with the seed, the BLAS build, the CPU and the library versions. Such a
test declares a :class:`StochasticCheck`: a function ``run(seed) -> {name: value}`` that runs
the experiment, the :class:`Bound` each statistic must respect, and *broken* variants (a
constant predictor, shuffled labels, wrong units) that the bounds must reject.

The bounds are not guesses. ``python tests/calibrate_bounds.py`` runs every check over at
least 10 seeds, records the spread of every statistic in ``tests/bounds/<check>.json`` and a
figure, and flags a bound that lies closer than :data:`MIN_SIGMAS` standard deviations to the
mean over seeds (a correct model could fail it), or a broken variant that passes every bound
(the test could not catch it). Each test's docstring quotes the measured spread and the bound.

Examples
--------
>>> import numpy as np
>>> from dynmass.testing.bounds import Bound, StochasticCheck
>>> def mean_of_draws(seed):
...     return {"mean": float(np.random.default_rng(seed).normal(0.0, 1.0, 400).mean())}
>>> check = StochasticCheck(run=mean_of_draws, bounds={"mean": Bound(-0.25, 0.25)})
>>> round(check.check()["mean"], 3)  # seed 0, the test's seed
-0.037
>>> check.violations({"mean": 1.0})
['mean = 1 outside (-0.25, 0.25)']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["MIN_SIGMAS", "Bound", "StochasticCheck", "assert_within", "violations"]

#: A bound must sit at least this many standard deviations (measured over seeds) from the mean
#: of its statistic: one-sided Gaussian tail 3e-5 per statistic, so that a correct model fails a
#: test with negligible probability on any machine.
MIN_SIGMAS = 4.0


@dataclass(frozen=True)
class Bound:
    """Open interval ``lo < value < hi`` a statistic must fall in (``None``: unbounded side).

    Parameters
    ----------
    lo, hi : float or None
        Lower and upper limits, in the statistic's own units.
    """

    lo: float | None = None
    hi: float | None = None

    def contains(self, value: float) -> bool:
        """True when ``value`` is finite and inside the open interval."""
        if value is None or not math.isfinite(value):
            return False
        return (self.lo is None or value > self.lo) and (self.hi is None or value < self.hi)

    def margin_sigmas(self, mean: float, sd: float) -> float:
        """Distance, in units of ``sd``, from ``mean`` to the nearer limit (inf if unbounded).

        Parameters
        ----------
        mean : float
            Mean of the statistic (e.g. over seeds).
        sd : float
            Its standard deviation; with ``sd <= 0`` the result is +inf when
            ``mean`` is inside the limits, -inf otherwise.

        Returns
        -------
        float
            Negative when ``mean`` lies beyond a limit.
        """
        gaps = [g for g in (None if self.lo is None else mean - self.lo,
                            None if self.hi is None else self.hi - mean) if g is not None]
        if not gaps:
            return math.inf
        gap = min(gaps)
        if sd <= 0:
            return math.inf if gap > 0 else -math.inf
        return gap / sd

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"({lo}, {hi})"


def violations(stats: Mapping[str, float], bounds: Mapping[str, Bound]) -> list[str]:
    """The statistics of ``stats`` that fall outside their ``bounds``, as readable lines.

    Parameters
    ----------
    stats : mapping of str to float
        Measured statistics.
    bounds : mapping of str to Bound
        Declared bounds; every key must be present in ``stats``.

    Returns
    -------
    list of str
        One line per violated bound (empty when all hold).
    """
    out = []
    for name, bound in bounds.items():
        if name not in stats:
            out.append(f"{name} missing from the measured statistics {sorted(stats)}")
        elif not bound.contains(stats[name]):
            out.append(f"{name} = {stats[name]:.6g} outside {bound}")
    return out


def assert_within(stats: Mapping[str, float], bounds: Mapping[str, Bound],
                  context: str = "") -> None:
    """Raise ``AssertionError`` listing every statistic outside its bound.

    Parameters
    ----------
    stats : mapping of str to float
        Measured statistics.
    bounds : mapping of str to Bound
        Declared bounds.
    context : str
        Prefix of the error message (e.g. the check's name).
    """
    bad = violations(stats, bounds)
    if bad:
        raise AssertionError(f"{context}: " + "; ".join(bad) + f" (all: {dict(stats)})")


@dataclass(frozen=True)
class StochasticCheck:
    """A random experiment, the bounds of its statistics, and variants those bounds must reject.

    Parameters
    ----------
    run : callable
        ``run(seed) -> dict[str, float]``: runs the experiment with every random step seeded by
        ``seed`` and returns its statistics.
    bounds : dict of str to Bound
        What a correct implementation must satisfy.
    seed : int
        The seed the test suite uses.
    broken : dict of str to callable
        ``{description: run_broken(seed)}``: the same experiment with a deliberately broken
        model or input; each must violate at least one bound (raising counts as caught).
    n_seeds : int
        Seeds ``0 .. n_seeds - 1`` the calibration runs (at least 10; more for cheap checks).
    """

    run: Callable[[int], dict[str, float]]
    bounds: dict[str, Bound]
    seed: int = 0
    broken: dict[str, Callable[[int], dict[str, float]]] = field(default_factory=dict)
    n_seeds: int = 20

    def __post_init__(self) -> None:
        if self.n_seeds < 10:
            raise ValueError(f"a stochastic check needs at least 10 seeds, got {self.n_seeds}")

    def violations(self, stats: Mapping[str, float]) -> list[str]:
        """Lines for every bound ``stats`` violates."""
        return violations(stats, self.bounds)

    def check(self, seed: int | None = None) -> dict[str, float]:
        """Run at ``seed`` (default: the test's seed), assert the bounds, return the statistics."""
        stats = self.run(self.seed if seed is None else seed)
        fn = getattr(self.run, "func", self.run)  # functools.partial: the wrapped function
        assert_within(stats, self.bounds, context=getattr(fn, "__name__", "check"))
        return stats
