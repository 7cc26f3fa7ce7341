"""Readers of external catalogs on tiny files written inside the tests; bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from astropy.table import Table

from dynmass import InputError, read_catalog
from dynmass.cli import main
from dynmass.cosmology import MDPL2
from dynmass.readers import (
    UM_BINARY_DTYPE,
    read_hlist,
    read_table,
    read_universemachine,
)
from dynmass.universe.massfunction import r200c_comoving

UM_HEADER = ("#ID DescID UPID Flags Uparent_Dist X Y Z VX VY VZ M V MP VMP R Rank1 Rank2 RA "
             "RARank SM ICL SFR obs_SM obs_SFR SSFR SM/HM obs_UV\n#a = 0.895255\n")


def _um_rows():
    # two hosts, two satellites of host 1, one flagged (ignored) row
    return [
        # id upid flags x y z vx vy vz M sm obs_sm
        (1, -1, 0, 10.0, 20.0, 30.0, 100.0, 0.0, -50.0, 1e14, 1e11, 1.2e11),
        (2, -1, 0, 90.0, 5.0, 50.0, -20.0, 10.0, 0.0, 1e12, 5e9, 4e9),
        (3, 1, 0, 10.5, 20.2, 29.9, 600.0, -300.0, 0.0, 1e11, 2e9, 3e9),
        (4, 1, 0, 9.8, 19.9, 30.3, -400.0, 200.0, 100.0, 5e10, 1e9, 1.1e9),
        (5, -1, 16, 50.0, 50.0, 50.0, 0.0, 0.0, 0.0, 1e13, 1e10, 1e10),
    ]


def _write_um_ascii(path, rows=None, extra=""):
    lines = [UM_HEADER]
    for (i, up, fl, x, y, z, vx, vy, vz, m, sm, osm) in rows or _um_rows():
        lines.append(f"{i} -1 {up} {fl} 0 {x} {y} {z} {vx} {vy} {vz} {m:.6e} 200 {m:.6e} 200 100 "
                     f"0 0 0 0 {sm:.6e} 0 1.0 {osm:.6e} 1.0 1e-10 0.01 -20\n")
    path.write_text("".join(lines) + extra)
    return path


def _write_um_binary(path, rows=None):
    rows = rows or _um_rows()
    arr = np.zeros(len(rows), UM_BINARY_DTYPE)
    for k, (i, up, fl, x, y, z, vx, vy, vz, m, sm, osm) in enumerate(rows):
        arr[k]["id"], arr[k]["upid"], arr[k]["flags"] = i, up, fl
        arr[k]["pos"] = (x, y, z, vx, vy, vz)
        arr[k]["m"], arr[k]["sm"], arr[k]["obs_sm"] = m, sm, osm
    arr.tofile(path)
    return path


def test_um_binary_layout_matches_struct():
    # struct catalog_halo: 3 int64, int32 + float, pos[6], 17 floats; 8-byte aligned -> 128 bytes
    assert UM_BINARY_DTYPE.itemsize == 128
    offs = {n: UM_BINARY_DTYPE.fields[n][1] for n in UM_BINARY_DTYPE.names}
    assert offs["flags"] == 24 and offs["pos"] == 32 and offs["m"] == 68
    assert offs["sm"] == 100 and offs["obs_sm"] == 112 and offs["obs_uv"] == 120


@pytest.mark.parametrize("binary", [False, True])
def test_universemachine_readers(tmp_path, binary):
    if binary:
        path = _write_um_binary(tmp_path / "sfr_catalog_0.895255.bin")
    else:
        path = _write_um_ascii(tmp_path / "sfr_catalog_0.895255.txt")
    cat = read_universemachine(path, box_size=100.0)
    assert cat.redshift == pytest.approx(1 / 0.895255 - 1)
    np.testing.assert_array_equal(np.sort(cat.halos["id"]), [1, 2])  # flagged row 5 ignored
    i1 = int(np.flatnonzero(cat.halos["id"] == 1)[0])
    # M_vir -> M200c is a ~10-20 % reduction at 1e14 Msun/h
    assert 0.75 < cat.halos["m200c"][i1] / 1e14 < 0.95
    assert cat.halos["r200c"][i1] == pytest.approx(
        r200c_comoving(cat.halos["m200c"][i1], cat.redshift, MDPL2), rel=1e-6)
    g = cat.galaxies
    assert g["x"].size == 4
    np.testing.assert_array_equal(g["host_id"], [1, 2, 1, 1])
    np.testing.assert_array_equal(g["is_central"], [True, True, False, False])
    assert g["log10_mstar"][2] == pytest.approx(np.log10(3e9), abs=1e-5)
    assert read_universemachine(path, box_size=100.0, mstar_min=9.5).n_galaxies == 2


def _write_hlist(path, rows, box="100.000000"):
    head = ("#scale(0) id(1) desc_scale(2) desc_id(3) num_prog(4) pid(5) upid(6) mvir(7) "
            "x(8) y(9) z(10) vx(11) vy(12) vz(13) M200c(14)\n#a = 0.895255\n"
            "#Omega_M = 0.3; Omega_L = 0.7; h0 = 0.700000\n"
            f"#Full box size = {box} Mpc/h\n")
    body = "".join(f"0.8953 {i} 0 -1 1 {up} {up} {m*1.2:.4e} {x} {y} {z} {vx} 0 0 {m:.4e}\n"
                   for (i, up, x, y, z, vx, m) in rows)
    path.write_text(head + body)
    return path


def test_hlist_reader(tmp_path):
    rows = [(10, -1, 5.0, 5.0, 5.0, 100.0, 1e14), (11, 10, 5.3, 5.1, 4.9, -500.0, 1e12),
            (12, -1, 60.0, 70.0, 80.0, 0.0, 3e12), (13, -1, 1.0, 2.0, 3.0, 0.0, 0.0)]
    path = _write_hlist(tmp_path / "hlist_0.89526.list", rows)
    cat = read_hlist(path)
    assert cat.box_size == 100.0 and cat.cosmology["H0"] == pytest.approx(70.0)
    assert cat.cosmology["Om0"] == pytest.approx(0.3)
    np.testing.assert_array_equal(cat.halos["id"], [10, 12])  # M200c = 0 host dropped
    np.testing.assert_allclose(cat.halos["m200c"], [1e14, 3e12])
    np.testing.assert_array_equal(cat.galaxies["host_id"], [10, 10, 12])
    np.testing.assert_array_equal(cat.galaxies["is_central"], [True, False, True])
    hod = read_hlist(path, galaxies="hod", mstar_min=9.0, seed=1)
    assert hod.galaxies["is_central"].sum() <= 2 and "log10_mstar" in hod.galaxies


def _table_data(rng, n_h=5, n_g=12, scale=1.0):
    halos = Table({"HID": np.arange(n_h) + 100, "PX": rng.uniform(0, 50, n_h) * scale,
                   "PY": rng.uniform(0, 50, n_h) * scale, "PZ": rng.uniform(0, 50, n_h) * scale,
                   "VX": rng.normal(0, 300, n_h), "VY": rng.normal(0, 300, n_h),
                   "VZ": rng.normal(0, 300, n_h), "M": 10 ** rng.uniform(12, 14, n_h)})
    gals = Table({"GX": rng.uniform(0, 50, n_g) * scale, "GY": rng.uniform(0, 50, n_g) * scale,
                  "GZ": rng.uniform(0, 50, n_g) * scale, "GVX": rng.normal(0, 300, n_g),
                  "GVY": rng.normal(0, 300, n_g), "GVZ": rng.normal(0, 300, n_g),
                  "HOST": rng.choice(halos["HID"], n_g), "CEN": np.zeros(n_g, bool)})
    return halos, gals


MAPPING = ("halos.id=HID,halos.x=PX,halos.y=PY,halos.z=PZ,halos.vx=VX,halos.vy=VY,halos.vz=VZ,"
           "halos.m200c=M,galaxies.x=GX,galaxies.y=GY,galaxies.z=GZ,galaxies.vx=GVX,"
           "galaxies.vy=GVY,galaxies.vz=GVZ,galaxies.host_id=HOST,galaxies.is_central=CEN")


@pytest.mark.parametrize("ext", ["csv", "parquet", "fits"])
def test_generic_tables(tmp_path, rng, ext):
    halos, gals = _table_data(rng, scale=1000.0)  # positions in kpc/h
    hp, gp = tmp_path / f"h.{ext}", tmp_path / f"g.{ext}"
    for t, p in ((halos, hp), (gals, gp)):
        if ext == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({c: np.asarray(t[c]) for c in t.colnames}), p)
        else:
            t.write(p, format={"csv": "ascii.csv", "fits": "fits"}[ext])
    cat = read_table(hp, galaxies_path=gp, columns=MAPPING, box_size=50.0, redshift=0.1,
                     units={"position": "kpc/h"})
    np.testing.assert_allclose(cat.halos["x"], np.asarray(halos["PX"]) / 1000.0)
    np.testing.assert_array_equal(cat.galaxies["host_id"], np.asarray(gals["HOST"]))
    assert cat.n_halos == 5 and np.all(cat.halos["r200c"] > 0)


def test_hdf5_table_with_groups_and_cli(tmp_path, rng, capsys):
    halos, gals = _table_data(rng)
    src = tmp_path / "mine.h5"
    with h5py.File(src, "w") as fh:
        fh.attrs["box_size"], fh.attrs["redshift"] = 50.0, 0.2
        for name, t in (("halos", halos), ("galaxies", gals)):
            g = fh.create_group(name)
            for c in t.colnames:
                g[c] = np.asarray(t[c])
    out = tmp_path / "u.h5"
    rc = main(["universe", "--from", str(src), "--format", "table", "--columns", MAPPING,
               "-o", str(out)])
    assert rc == 0
    cat = read_catalog(out)
    assert cat.box_size == 50.0 and cat.redshift == pytest.approx(0.2)
    assert cat.settings["reader"] == "table"
    # masses given in Msun (h-free) are converted to Msun/h
    cat2 = read_table(src, columns=MAPPING, units={"mass": "Msun"})
    np.testing.assert_allclose(cat2.halos["m200c"], np.asarray(halos["M"]) * 0.6777)


# ---------------------------------------------------------------- bad input
def test_bad_universemachine_files(tmp_path):
    rows = _um_rows()
    good = _write_um_binary(tmp_path / "sfr_catalog_0.9.bin")
    trunc = tmp_path / "sfr_catalog_0.8.bin"
    trunc.write_bytes(good.read_bytes()[:-7])
    with pytest.raises(InputError, match=r"sfr_catalog_0.8.bin.*truncated"):
        read_universemachine(trunc, box_size=100.0)
    bad = [list(r) for r in rows]
    bad[2][3] = float("nan")
    p = _write_um_ascii(tmp_path / "sfr_catalog_0.7.txt", [tuple(r) for r in bad])
    with pytest.raises(InputError, match=r"sfr_catalog_0.7.txt.*column 'X'.*non-finite"):
        read_universemachine(p, box_size=100.0)
    p = _write_um_ascii(tmp_path / "sfr_catalog_0.6.txt", extra="7 -1 -1 0 0 1.0 2.0\n")
    with pytest.raises(InputError, match=r"sfr_catalog_0.6.txt.*truncated"):
        read_universemachine(p, box_size=100.0)
    far = [list(r) for r in rows]
    far[1][3] = 130.0
    p = _write_um_ascii(tmp_path / "sfr_catalog_0.5.txt", [tuple(r) for r in far])
    with pytest.raises(InputError, match=r"column 'X'.*outside the box"):
        read_universemachine(p, box_size=100.0)
    wrapped = read_universemachine(p, box_size=100.0, wrap=True)
    assert wrapped.galaxies["x"][1] == pytest.approx(30.0)
    foreign = tmp_path / "sfr_catalog_0.4.txt"
    foreign.write_text("hello world\n1 2 3\n")
    with pytest.raises(InputError, match="foreign"):
        read_universemachine(foreign, box_size=100.0)


def test_bad_hlist_and_tables(tmp_path, rng, capsys):
    p = tmp_path / "hlist_0.9.list"
    p.write_text("#scale(0) id(1) upid(2) x(3) y(4) z(5) vx(6) vy(7) vz(8)\n#a = 0.9\n"
                 "0.9 1 -1 1 1 1 0 0 0\n")
    with pytest.raises(InputError, match=r"hlist_0.9.list.*column 'M200c'.*missing"):
        read_hlist(p, box_size=10.0)
    halos, gals = _table_data(rng)
    gals["GVX"][3] = np.inf
    hp, gp = tmp_path / "h.csv", tmp_path / "g.csv"
    halos.write(hp, format="ascii.csv")
    gals.write(gp, format="ascii.csv")
    with pytest.raises(InputError, match=r"g.csv.*column 'GVX'.*non-finite"):
        read_table(hp, galaxies_path=gp, columns=MAPPING, box_size=50.0, redshift=0.1)
    with pytest.raises(InputError, match=r"h.csv.*column 'PX_missing'.*missing"):
        read_table(hp, galaxies_path=gp, box_size=50.0, redshift=0.1,
                   columns=MAPPING.replace("halos.x=PX", "halos.x=PX_missing"))
    # a foreign and a truncated table file; CLI writes nothing on error
    (tmp_path / "foreign.parquet").write_bytes(b"\x89PNG\r\n\x1a\n not parquet")
    out = tmp_path / "out.h5"
    rc = main(["universe", "--from", str(tmp_path / "foreign.parquet"), "--format", "table",
               "--box", "50", "--redshift", "0.1", "-o", str(out)])
    assert rc == 2 and "foreign.parquet" in capsys.readouterr().err
    gals["GVX"][3] = 1.0
    gals.write(gp, format="ascii.csv", overwrite=True)
    data = hp.read_bytes()
    (tmp_path / "trunc.csv").write_bytes(data[: len(data) // 2 + 3])
    rc = main(["universe", "--from", str(tmp_path / "trunc.csv"), "--galaxies", str(gp),
               "--format", "table", "--columns", MAPPING, "--box", "50", "--redshift", "0.1",
               "-o", str(out)])
    assert rc == 2 and "trunc.csv" in capsys.readouterr().err
    assert not out.exists()
    assert not list(tmp_path.glob(".out.h5*"))
