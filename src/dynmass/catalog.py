"""The catalog: halos and galaxies in a periodic box, and its HDF5 file format.

A catalog is two column tables plus metadata. Units: positions in comoving Mpc/h, velocities
peculiar in km/s, masses M200c in Msun/h, radii R200c in comoving Mpc/h; galaxy stellar masses
``log10_mstar`` in log10 Msun, h-free (:mod:`dynmass.stellar_mass`; files record it in
``units``, and files written before that are converted or read with a warning).

File format (HDF5)::

    /                       attrs: dynmass_kind="catalog", box_size [Mpc/h], redshift,
                                   cosmology (JSON, >= H0, Om0), seed, dynmass_version,
                                   settings (JSON: the generator's or reader's settings)
    /halos/id, x, y, z, vx, vy, vz, m200c, r200c, [any other column]
    /galaxies/x, y, z, vx, vy, vz, host_id, is_central, [any property column, e.g. log10_mstar]

Readers for catalogs users bring (UniverseMachine, Rockstar hlist, generic tables) live in
:mod:`dynmass.readers`; they all return a :class:`Catalog`.

Examples
--------
Two halos and three galaxies in a 100 Mpc/h box, written to a temporary folder and read back:

>>> import os, tempfile
>>> import numpy as np
>>> from dynmass.catalog import Catalog, read_catalog, write_catalog
>>> halos = {"id": np.array([1, 2]), "x": np.array([10.0, 50.0]), "y": np.array([20.0, 60.0]),
...          "z": np.array([30.0, 70.0]), "vx": np.zeros(2), "vy": np.zeros(2),
...          "vz": np.zeros(2), "m200c": np.array([1e14, 2e13]), "r200c": np.array([0.8, 0.5])}
>>> galaxies = {"x": np.array([10.0, 10.3, 50.0]), "y": np.array([20.0, 20.1, 60.0]),
...             "z": np.array([30.0, 29.8, 70.0]), "vx": np.array([0.0, 600.0, 0.0]),
...             "vy": np.zeros(3), "vz": np.zeros(3), "host_id": np.array([1, 1, 2]),
...             "is_central": np.array([1, 0, 1])}
>>> tmp = tempfile.mkdtemp()
>>> path = write_catalog(Catalog(halos, galaxies, box_size=100.0, redshift=0.117),
...                      os.path.join(tmp, "catalog.h5"))
>>> cat = read_catalog(path)
>>> cat.n_halos, cat.n_galaxies, cat.cosmology["name"]
(2, 3, 'MDPL2')
>>> cat.galaxy_positions().shape, cat.galaxies["is_central"].tolist()
((3, 3), [True, False, True])

Bad values are refused with the column named:

>>> from dynmass.errors import InputError
>>> try:
...     Catalog(halos, dict(galaxies, x=np.array([10.0, 130.0, 50.0])), 100.0, 0.117).validate()
... except InputError as exc:
...     print(exc)
column 'galaxies/x': 1 positions outside the box [0, 100.0) Mpc/h, first at row 1 (value 130.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dynmass._io import (
    atomic_path,
    hdf5_read_errors,
    open_hdf5,
    provenance,
    read_json_attr,
    to_json,
)
from dynmass.cosmology import MDPL2, validate_cosmology
from dynmass.errors import InputError
from dynmass.stellar_mass import MSTAR_UNIT, check_file_mstar

HALO_COLUMNS: tuple[str, ...] = ("id", "x", "y", "z", "vx", "vy", "vz", "m200c", "r200c")
GALAXY_COLUMNS: tuple[str, ...] = ("x", "y", "z", "vx", "vy", "vz", "host_id", "is_central")
_INT_COLUMNS = {"id", "host_id"}
_BOOL_COLUMNS = {"is_central"}


@dataclass
class Catalog:
    """Halos and galaxies in a periodic box.

    Parameters
    ----------
    halos : dict of str to numpy.ndarray
        Columns of equal length; at least :data:`HALO_COLUMNS`. Positions comoving Mpc/h in
        [0, box_size), velocities peculiar km/s, ``m200c`` Msun/h, ``r200c`` comoving Mpc/h.
    galaxies : dict of str to numpy.ndarray
        Columns of equal length; at least :data:`GALAXY_COLUMNS`. ``host_id`` is the ``id`` of
        the host halo (-1 for none), ``is_central`` a boolean.
    box_size : float
        Side of the periodic box, comoving Mpc/h.
    redshift : float
        Redshift of the snapshot.
    cosmology : dict
        Cosmological parameters (at least ``H0`` in km/s/Mpc and ``Om0``).
    seed : int or None
        Seed that made the catalog (``None`` for external catalogs).
    settings : dict
        Generator's or reader's settings, recorded in the file.
    """

    halos: dict[str, np.ndarray]
    galaxies: dict[str, np.ndarray]
    box_size: float
    redshift: float
    cosmology: dict[str, Any] = field(default_factory=lambda: dict(MDPL2))
    seed: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_halos(self) -> int:
        """Number of halos."""
        return len(self.halos["id"])

    @property
    def n_galaxies(self) -> int:
        """Number of galaxies."""
        return len(self.galaxies["x"])

    def halo_positions(self) -> np.ndarray:
        """(N, 3) halo positions, comoving Mpc/h."""
        return np.column_stack([self.halos[c] for c in ("x", "y", "z")])

    def galaxy_positions(self) -> np.ndarray:
        """(N, 3) galaxy positions, comoving Mpc/h."""
        return np.column_stack([self.galaxies[c] for c in ("x", "y", "z")])

    def galaxy_velocities(self) -> np.ndarray:
        """(N, 3) galaxy peculiar velocities, km/s."""
        return np.column_stack([self.galaxies[c] for c in ("vx", "vy", "vz")])

    def validate(self, path: object | None = None) -> Catalog:
        """Check columns, lengths, finiteness and box bounds; raise :class:`InputError` if bad.

        Parameters
        ----------
        path : optional
            File name to quote in error messages.

        Returns
        -------
        Catalog
            ``self``, with columns cast to their canonical dtypes.
        """
        if not np.isfinite(self.box_size) or self.box_size <= 0:
            raise InputError(f"box_size={self.box_size} must be a positive number (Mpc/h)", path)
        if not np.isfinite(self.redshift) or self.redshift < 0:
            raise InputError(f"redshift={self.redshift} must be finite and >= 0", path)
        self.cosmology = validate_cosmology(self.cosmology, path)
        self.halos = _validate_table(self.halos, HALO_COLUMNS, "halos", self.box_size, path)
        self.galaxies = _validate_table(
            self.galaxies, GALAXY_COLUMNS, "galaxies", self.box_size, path
        )
        ids = np.sort(self.halos["id"])
        if np.any(ids[1:] == ids[:-1]):
            raise InputError("halo ids are not unique", path, "halos/id")
        if np.any(self.halos["m200c"] <= 0) or np.any(self.halos["r200c"] <= 0):
            raise InputError("m200c and r200c must be positive", path, "halos/m200c")
        known = np.isin(self.galaxies["host_id"], self.halos["id"]) | (self.galaxies["host_id"] < 0)
        if not np.all(known):
            bad = int(np.flatnonzero(~known)[0])
            raise InputError(
                f"galaxy row {bad} has host_id={int(self.galaxies['host_id'][bad])} that is not a halo id",
                path,
                "galaxies/host_id",
            )
        return self


def _validate_table(
    table: dict[str, np.ndarray],
    required: tuple[str, ...],
    name: str,
    box_size: float,
    path: object | None,
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for col in required:
        if col not in table:
            raise InputError("required column is missing", path, f"{name}/{col}")
    n = len(table[required[0]])
    for col, values in table.items():
        arr = np.asarray(values)
        if arr.ndim != 1 or arr.shape[0] != n:
            raise InputError(f"has shape {arr.shape}, expected ({n},)", path, f"{name}/{col}")
        if arr.dtype.kind == "f":  # before any cast: NaN would become an arbitrary integer
            bad = ~np.isfinite(arr)
            if bad.any():
                raise InputError(
                    f"{int(bad.sum())} non-finite (NaN or infinite) values, first at row "
                    f"{int(np.flatnonzero(bad)[0])}",
                    path,
                    f"{name}/{col}",
                )
        if col in _INT_COLUMNS:
            if arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
                row = int(np.flatnonzero(arr != np.round(arr))[0])
                raise InputError(f"non-integer id at row {row} (value {arr[row]})", path,
                                 f"{name}/{col}")
            arr = arr.astype(np.int64, copy=False)
        elif col in _BOOL_COLUMNS:
            arr = arr.astype(bool, copy=False)
        if col in ("x", "y", "z"):
            outside = (arr < 0) | (arr >= box_size)
            if outside.any():
                row = int(np.flatnonzero(outside)[0])
                raise InputError(
                    f"{int(outside.sum())} positions outside the box [0, {box_size}) Mpc/h, "
                    f"first at row {row} (value {arr[row]})",
                    path,
                    f"{name}/{col}",
                )
        out[col] = arr
    return out


def catalog_units(galaxy_columns: Any) -> dict[str, str]:
    """The ``units`` attribute of a catalog file whose galaxies have ``galaxy_columns``."""
    units = {"position": "comoving Mpc/h", "velocity": "peculiar km/s", "m200c": "Msun/h",
             "r200c": "comoving Mpc/h", "box_size": "comoving Mpc/h"}
    if "log10_mstar" in galaxy_columns:
        units["log10_mstar"] = MSTAR_UNIT
    return units


def write_catalog(catalog: Catalog, path: str | os.PathLike) -> Path:
    """Validate ``catalog`` and write it to ``path`` (HDF5) atomically.

    Parameters
    ----------
    catalog : Catalog
        Catalog to write.
    path : str or os.PathLike
        Destination file.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    catalog.validate()
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.attrs["dynmass_kind"] = "catalog"
        fh.attrs["box_size"] = float(catalog.box_size)
        fh.attrs["redshift"] = float(catalog.redshift)
        fh.attrs["cosmology"] = to_json(catalog.cosmology)
        fh.attrs["seed"] = -1 if catalog.seed is None else int(catalog.seed)
        fh.attrs["settings"] = to_json(catalog.settings)
        prov = provenance()
        fh.attrs["dynmass_version"] = prov["dynmass_version"]
        fh.attrs["provenance"] = to_json(prov)
        fh.attrs["units"] = to_json(catalog_units(catalog.galaxies))
        for group, table in (("halos", catalog.halos), ("galaxies", catalog.galaxies)):
            g = fh.create_group(group)
            for col, arr in table.items():
                g.create_dataset(col, data=arr, chunks=True if len(arr) > 0 else None,
                                 compression="gzip" if len(arr) > 100_000 else None)
        fh.attrs["complete"] = True
    return path


def read_catalog(path: str | os.PathLike, columns: dict[str, list[str]] | None = None) -> Catalog:
    """Read a dynmass catalog file written by :func:`write_catalog`.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 catalog.
    columns : dict, optional
        ``{"halos": [...], "galaxies": [...]}`` to read only some columns (the required ones are
        always read).

    Returns
    -------
    Catalog
        The validated catalog.

    Raises
    ------
    InputError
        Missing file, foreign or truncated file, missing columns, bad values.
    """
    with hdf5_read_errors(path), open_hdf5(path, kind="catalog") as fh:
        if not fh.attrs.get("complete", False):
            raise InputError("file is incomplete (interrupted write?)", path)
        tables = {}
        for group, required in (("halos", HALO_COLUMNS), ("galaxies", GALAXY_COLUMNS)):
            if group not in fh:
                raise InputError(f"missing group '{group}'", path)
            wanted = list(fh[group].keys()) if columns is None else sorted(
                set(required) | set(columns.get(group, []))
            )
            table = {}
            for col in wanted:
                if col not in fh[group]:
                    raise InputError("required column is missing", path, f"{group}/{col}")
                table[col] = fh[group][col][...]
            tables[group] = table
        seed = int(fh.attrs.get("seed", -1))
        settings = read_json_attr(fh, "settings", path) if "settings" in fh.attrs else {}
        cosmology = read_json_attr(fh, "cosmology", path)
        if "log10_mstar" in tables["galaxies"]:  # one unit: log10 Msun (dynmass.stellar_mass)
            units = read_json_attr(fh, "units", path) if "units" in fh.attrs else None
            tables["galaxies"]["log10_mstar"] = check_file_mstar(
                tables["galaxies"]["log10_mstar"], units, settings, cosmology, path)
        cat = Catalog(
            halos=tables["halos"],
            galaxies=tables["galaxies"],
            box_size=float(fh.attrs["box_size"]),
            redshift=float(fh.attrs["redshift"]),
            cosmology=cosmology,
            seed=None if seed < 0 else seed,
            settings=settings,
        )
    return cat.validate(path)
