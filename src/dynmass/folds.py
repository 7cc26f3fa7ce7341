"""Splits of views by host halo: cross-validation folds, pseudo-folds, validation sets.

Views of one host along different lines of sight share its mass, its neighbours and its
interlopers, so every split in dynmass keeps all views of a host on one side.

* :func:`rank_folds`: hosts ranked by M200c (descending), host ``i`` in fold ``i mod k``
  (Ho et al. 2019, ApJ 887, 25): each fold samples the whole mass range. Used for the outer
  cross-validation (:func:`dynmass.train.assign_folds`) and the inner one of SDM.
* :func:`random_host_folds`: hosts dealt to ``k`` folds at random (seeded): the pseudo-folds
  of independent calibration views.
* :func:`split_by_halo`: a seeded fraction of the hosts held out for validation (early
  stopping of the CNNs).

Examples
--------
>>> import numpy as np
>>> from dynmass.folds import rank_folds
>>> halo = np.array([7, 7, 3, 3, 9, 5])
>>> m200c = np.array([1e15, 1e15, 2e14, 2e14, 5e14, 1e14])  # Msun/h
>>> rank_folds(halo, m200c, 2).tolist()  # ranks: 7, 9, 3, 5
[0, 0, 0, 0, 1, 1]
"""

from __future__ import annotations

import numpy as np

from dynmass.errors import InputError

__all__ = ["random_host_folds", "rank_folds", "split_by_halo"]


def rank_folds(halo_id: np.ndarray, m200c: np.ndarray, k: int) -> np.ndarray:
    """Fold of every view: hosts ranked by M200c, fold = rank mod ``k`` (Ho et al. 2019).

    Hosts (unique ``halo_id``) are ranked by M200c (descending; ties by ``halo_id``; a host's
    mass is the largest of its views') and host ``i`` in that order goes to fold ``i mod k``.

    Parameters
    ----------
    halo_id : numpy.ndarray
        Host halo id of every view.
    m200c : numpy.ndarray
        True M200c of every view, Msun/h (finite, positive).
    k : int
        Number of folds (>= 2 and at most the number of distinct halos).

    Returns
    -------
    numpy.ndarray of int
        Fold index in ``[0, k)`` of every view.
    """
    halo_id = np.asarray(halo_id)
    mass = np.asarray(m200c, dtype=float)
    if not np.all(np.isfinite(mass)) or np.any(mass <= 0):
        raise InputError("every view needs a finite positive M200c to be assigned a fold",
                         column="clusters/m200c")
    hosts, inverse = np.unique(halo_id, return_inverse=True)
    k = int(k)
    if k < 2 or k > len(hosts):
        raise InputError(f"folds must be between 2 and the number of halos ({len(hosts)}), "
                         f"not {k}", column="folds")
    host_mass = np.zeros(len(hosts))
    np.maximum.at(host_mass, inverse, mass)
    order = np.lexsort((hosts, -host_mass))
    fold_of_host = np.empty(len(hosts), dtype=np.int64)
    fold_of_host[order] = np.arange(len(hosts)) % k
    return fold_of_host[inverse.ravel()]


def random_host_folds(host: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Seeded fold label (0..k-1) per view, the same for every view of a host.

    Parameters
    ----------
    host : numpy.ndarray
        Host label of every view.
    k : int
        Number of folds.
    seed : int
        Seed of the random deal of hosts to folds.
    """
    uniq, inv = np.unique(host, return_inverse=True)
    rng = np.random.default_rng(seed)
    return (rng.permutation(len(uniq)) % k)[inv.ravel()].astype(np.int64)


def split_by_halo(halo_id: np.ndarray, val_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Split view indices into training and validation sets by halo.

    Parameters
    ----------
    halo_id : numpy.ndarray
        Host halo of every view; all views of a halo land on the same side.
    val_fraction : float
        Fraction of the halos in the validation set (at least one halo when positive and
        there are two or more halos).
    seed : int
        Seed of the random choice of validation halos.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Sorted view indices of the training and the validation set.
    """
    if not 0 <= val_fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), not {val_fraction}",
                         column="val_fraction")
    halos = np.unique(halo_id)
    n_val = int(round(val_fraction * len(halos)))
    if val_fraction > 0 and n_val == 0 and len(halos) >= 2:
        n_val = 1
    rng = np.random.default_rng([seed, 7919])
    val_halos = rng.choice(halos, size=n_val, replace=False) if n_val else halos[:0]
    is_val = np.isin(halo_id, val_halos)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
