"""Property-based hardening of the catalog readers (:mod:`dynmass.readers`, hypothesis).

Random generic tables (CSV pairs and HDF5 files with ``halos``/``galaxies`` groups) with
random extra columns, renamed columns and a column mapping. Properties:

* a clean table reads back exactly (every row kept, values unchanged);
* a NaN or infinite value at a random row of any required column raises :class:`InputError`
  naming that file and that (file) column, and never a numpy/h5py traceback;
* a position outside the box raises an :class:`InputError` naming the column, or is wrapped
  periodically into ``[0, box)`` with ``wrap=True``;
* a non-integral id is refused (it used to be truncated silently).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynmass.errors import InputError
from dynmass.readers import read_hlist, read_table

HYP = settings(max_examples=25, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow])
HALO_REQ = ("id", "x", "y", "z", "vx", "vy", "vz", "m200c")
GAL_REQ = ("x", "y", "z", "vx", "vy", "vz", "host_id")
FLOAT_TARGETS = [("halos", c) for c in HALO_REQ if c != "id"] + \
                [("galaxies", c) for c in GAL_REQ]


def _tables(rng: np.random.Generator, n_h: int, n_g: int, box: float, n_extra: int):
    halos = {"id": rng.permutation(np.arange(1, 10 * n_h + 1))[:n_h].astype(np.int64)}
    gals: dict[str, np.ndarray] = {}
    for t, n in ((halos, n_h), (gals, n_g)):
        for c in "xyz":
            t[c] = rng.uniform(0, box, n)
        for c in ("vx", "vy", "vz"):
            t[c] = rng.normal(0, 500, n)
    halos["m200c"] = 10 ** rng.uniform(12, 15, n_h)
    gals["host_id"] = np.where(rng.random(n_g) < 0.3, -1, rng.choice(halos["id"], n_g))
    for j in range(n_extra):  # columns the reader must simply ignore
        halos[f"extra_{j}"] = rng.normal(size=n_h)
        gals[f"Extra{j}"] = rng.integers(-5, 5, n_g)
    return halos, gals


def _names(rename: bool) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(file name of halo columns, of galaxy columns, mapping dynmass -> file)."""
    hn = {c: (f"H_{c.upper()}" if rename else c) for c in HALO_REQ}
    gn = {c: (f"gal{c.capitalize()}" if rename else c) for c in GAL_REQ}
    mapping = {}
    if rename:
        mapping.update({f"halos.{c}": n for c, n in hn.items()})
        mapping.update({f"galaxies.{c}": n for c, n in gn.items()})
    return hn, gn, mapping


def _fmt(x) -> str:
    return repr(float(x)) if isinstance(x, (float, np.floating)) else str(int(x))


def _write(tmp, fmt: str, halos: dict, gals: dict, hn: dict, gn: dict, box: float):
    """Write the tables; returns (halo path, galaxy path or None, galaxy file path)."""
    hfile = {hn.get(k, k): v for k, v in halos.items()}
    gfile = {gn.get(k, k): v for k, v in gals.items()}
    if fmt == "csv":
        paths = []
        for name, t in (("halos.csv", hfile), ("galaxies.csv", gfile)):
            cols = list(t)
            lines = [",".join(cols)] + [",".join(_fmt(t[c][i]) for c in cols)
                                        for i in range(len(t[cols[0]]))]
            (tmp / name).write_text("\n".join(lines) + "\n")
            paths.append(tmp / name)
        return paths[0], paths[1], paths[1]
    path = tmp / "tables.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs["box_size"] = box
        fh.attrs["redshift"] = 0.1
        for name, t in (("halos", hfile), ("galaxies", gfile)):
            g = fh.create_group(name)
            for c, v in t.items():
                g.create_dataset(c, data=v)
    return path, None, path


table_case = dict(
    seed=st.integers(0, 2**31 - 1),
    n_h=st.integers(1, 6),
    n_g=st.integers(1, 20),
    box=st.floats(5.0, 500.0),
    n_extra=st.integers(0, 3),
    rename=st.booleans(),
    fmt=st.sampled_from(["csv", "h5"]),
)


@HYP
@given(**table_case)
def test_clean_tables_read_back_exactly(tmp_path_factory, seed, n_h, n_g, box, n_extra,
                                        rename, fmt):
    tmp = tmp_path_factory.mktemp("clean")
    rng = np.random.default_rng(seed)
    halos, gals = _tables(rng, n_h, n_g, box, n_extra)
    hn, gn, mapping = _names(rename)
    hpath, gpath, _ = _write(tmp, fmt, halos, gals, hn, gn, box)
    cat = read_table(hpath, galaxies_path=gpath, columns=mapping, box_size=box, redshift=0.1)
    assert cat.n_halos == n_h and cat.n_galaxies == n_g  # nothing dropped
    for c in HALO_REQ:
        np.testing.assert_array_equal(cat.halos[c], halos[c], err_msg=c)
    for c in GAL_REQ:
        np.testing.assert_array_equal(cat.galaxies[c], gals[c], err_msg=c)
    assert np.all(cat.halos["r200c"] > 0)


@HYP
@given(**table_case, target=st.sampled_from(FLOAT_TARGETS),
       bad=st.sampled_from([np.nan, np.inf, -np.inf]), row_frac=st.floats(0, 0.999))
def test_non_finite_values_name_file_and_column(tmp_path_factory, seed, n_h, n_g, box, n_extra,
                                                rename, fmt, target, bad, row_frac):
    tmp = tmp_path_factory.mktemp("nonfinite")
    rng = np.random.default_rng(seed)
    halos, gals = _tables(rng, n_h, n_g, box, n_extra)
    group, col = target
    table = halos if group == "halos" else gals
    table[col] = table[col].astype(float)
    row = int(row_frac * len(table[col]))
    table[col][row] = bad
    hn, gn, mapping = _names(rename)
    hpath, gpath, gfile = _write(tmp, fmt, halos, gals, hn, gn, box)
    with pytest.raises(InputError) as err:
        read_table(hpath, galaxies_path=gpath, columns=mapping, box_size=box, redshift=0.1)
    file_col = (hn if group == "halos" else gn)[col]
    assert err.value.column == file_col, str(err.value)
    assert err.value.path == str(hpath if group == "halos" else gfile)
    assert "non-finite" in str(err.value) and f"row {row}" in str(err.value)


@HYP
@given(**table_case, group=st.sampled_from(["halos", "galaxies"]), axis=st.sampled_from("xyz"),
       how=st.sampled_from(["above", "below", "at_box"]), wrap=st.booleans(),
       row_frac=st.floats(0, 0.999))
def test_positions_outside_the_box(tmp_path_factory, seed, n_h, n_g, box, n_extra, rename, fmt,
                                   group, axis, how, wrap, row_frac):
    tmp = tmp_path_factory.mktemp("outside")
    rng = np.random.default_rng(seed)
    halos, gals = _tables(rng, n_h, n_g, box, n_extra)
    table = halos if group == "halos" else gals
    row = int(row_frac * len(table[axis]))
    value = {"above": box + rng.uniform(0.01, 0.99) * box, "below": -rng.uniform(0.01, 0.99) * box,
             "at_box": box}[how]
    table[axis][row] = value
    hn, gn, mapping = _names(rename)
    hpath, gpath, _ = _write(tmp, fmt, halos, gals, hn, gn, box)
    kw = dict(galaxies_path=gpath, columns=mapping, box_size=box, redshift=0.1, wrap=wrap)
    if not wrap:
        with pytest.raises(InputError, match="outside the box") as err:
            read_table(hpath, **kw)
        assert err.value.column == (hn if group == "halos" else gn)[axis]
        return
    cat = read_table(hpath, **kw)
    got = (cat.halos if group == "halos" else cat.galaxies)[axis]
    assert np.all((got >= 0) & (got < box))
    expect = np.mod(value, box)
    assert got[row] == pytest.approx(0.0 if expect >= box else expect, abs=1e-9 * box)
    assert cat.n_halos == n_h and cat.n_galaxies == n_g


def test_non_integer_ids_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    halos, gals = _tables(rng, 3, 5, 50.0, 0)
    gals["host_id"] = gals["host_id"].astype(float)
    gals["host_id"][2] = 1.5
    hn, gn, mapping = _names(False)
    hpath, gpath, _ = _write(tmp_path, "csv", halos, gals, hn, gn, 50.0)
    with pytest.raises(InputError, match="non-integer") as err:
        read_table(hpath, galaxies_path=gpath, box_size=50.0, redshift=0.1)
    assert err.value.column == "host_id" and err.value.path == str(gpath)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("col", ["x", "vz", "M200c"])
def test_hlist_non_finite_names_column(tmp_path, bad, col):
    """Rockstar hlist ASCII: a NaN/inf in any used column is refused, naming the column."""
    names = ["id", "upid", "x", "y", "z", "vx", "vy", "vz", "M200c"]
    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):
        vals = [str(i + 1), "-1", *(f"{x:.5f}" for x in rng.uniform(0, 50, 3)),
                *(f"{x:.3f}" for x in rng.normal(0, 300, 3)), f"{10 ** rng.uniform(12, 15):.4e}"]
        rows.append(" ".join(vals))
    parts = rows[4].split()
    parts[names.index(col)] = bad
    rows[4] = " ".join(parts)
    path = tmp_path / "hlist_0.89510.list"
    header = ["#" + " ".join(f"{n}({k})" for k, n in enumerate(names)),
              "#a = 0.89510", "#Omega_M = 0.307115; h0 = 0.677700", "#Full box size = 50 Mpc/h"]
    path.write_text("\n".join(header + rows) + "\n")
    with pytest.raises(InputError, match="non-finite") as err:
        read_hlist(path)
    assert err.value.column == col and err.value.path == str(path)
