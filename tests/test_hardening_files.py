"""Truncated, corrupted and non-finite inputs: a clear InputError naming the file, never a raw
h5py / numpy / csv traceback, and nothing half-written.

Files: catalog, observations, model, bundle (HDF5); members table for ``predict`` and
``predictions.csv`` for ``evaluate`` / ``bundle`` (CSV). Non-finite values: every catalog
column, observations R / v (file and in memory), members RA / Dec / z, predictions.csv.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from dynmass import Catalog, InputError, read_catalog, read_observations, write_catalog
from dynmass.bundle import load_bundle, make_bundle
from dynmass.cli import main
from dynmass.cosmology import MDPL2
from dynmass.models import load_model
from dynmass.observations import from_views, write_observations
from dynmass.predict import predict_file
from dynmass.rundir import load_run
from dynmass.train import cross_validate

SETTINGS = {"aperture": 1.6, "vcut": 2200.0, "redshift": 0.117, "cosmology": dict(MDPL2),
            "min_members": 5, "center": "true"}
PRED_COLUMNS = ("halo_id", "los", "fold", "log10_m200c_true", "log10_m200c_pred", "n_gal")


def toy_observations(seed: int = 0, n_halos: int = 30, n_los: int = 2):
    """Members with sigma = 1082.9 km/s (M / 1e15)^0.3361 (Evrard et al. 2008) plus interlopers."""
    rng = np.random.default_rng(seed)
    views, hid, los, m = [], [], [], []
    for h in range(n_halos):
        lm = rng.uniform(13.6, 15.0)
        sigma = 1082.9 * 10 ** (0.3361 * (lm - 15))
        for j in range(n_los):
            v = np.concatenate([rng.normal(0, sigma, 40), rng.uniform(-2200, 2200, 5)])
            v = v[np.abs(v) <= 2200]
            views.append((1.6 * np.sqrt(rng.random(len(v))), v))
            hid.append(h)
            los.append(j)
            m.append(10**lm)
    return from_views(views, SETTINGS, clusters={"halo_id": np.array(hid), "los": np.array(los),
                                                 "m200c": np.array(m)})


def toy_catalog(seed: int = 0, box: float = 40.0) -> Catalog:
    rng = np.random.default_rng(seed)
    nh, ng = 6, 300
    halos = {c: rng.uniform(0, box, nh) for c in "xyz"}
    halos.update({f"v{c}": rng.normal(0, 300, nh) for c in "xyz"})
    halos.update(id=np.arange(nh, dtype=np.int64), m200c=10 ** rng.uniform(13.6, 15, nh),
                 r200c=rng.uniform(0.5, 1.5, nh))
    gal = {c: rng.uniform(0, box, ng) for c in "xyz"}
    gal.update({f"v{c}": rng.normal(0, 300, ng) for c in "xyz"})
    gal.update(host_id=rng.integers(-1, nh, ng).astype(np.int64), is_central=np.zeros(ng, bool),
               log10_mstar=rng.uniform(9.5, 11.5, ng))
    return Catalog(halos, gal, box, 0.117, dict(MDPL2), seed=seed)


def members_csv(path: Path, n: int = 40, seed: int = 1) -> Path:
    """Two clusters of sky members near (150, 2) deg at z = 0.117."""
    rng = np.random.default_rng(seed)
    ra = 150 + rng.normal(0, 0.05, n)
    dec = 2 + rng.normal(0, 0.05, n)
    z = 0.117 + rng.normal(0, 0.002, n)
    rows = [f"{i % 2},{float(ra[i])!r},{float(dec[i])!r},{float(z[i])!r}" for i in range(n)]
    path.write_text("cluster_id,ra,dec,z\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("files")
    cat = write_catalog(toy_catalog(), tmp / "catalog.h5")
    obs = write_observations(toy_observations(), tmp / "obs.h5")
    run = cross_validate(obs, "msigma", tmp / "run", folds=3, progress=False)
    bundle = tmp / "bundle.h5"
    make_bundle(run, bundle, min_hosts=5, max_halfwidth=1.0)  # a toy run: 30 hosts
    return {"catalog": cat, "observations": obs, "model": run / "fold_00.h5", "bundle": bundle,
            "run": run, "members": members_csv(tmp / "members.csv"), "tmp": tmp}


READERS = {"catalog": read_catalog, "observations": read_observations, "model": load_model,
           "bundle": load_bundle}


def damaged_versions(raw: bytes, seed: int = 0):
    """Truncations and byte-flips of a file's bytes: ``(label, bytes, must_fail)``."""
    n = len(raw)
    for frac in (0.0, 0.001, 0.05, 0.3, 0.7, 0.97):
        yield f"truncated to {frac:.0%}", raw[:int(n * frac)], True
    yield "last byte missing", raw[:-1], True
    rng = np.random.default_rng(seed)
    offsets = list(range(0, min(n - 8, 3000), 89)) + list(rng.integers(0, n - 8, 10))
    for off in offsets:
        b = bytearray(raw)
        b[off:off + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
        yield f"8 bytes garbled at {off}", bytes(b), False


@pytest.mark.parametrize("kind", list(READERS))
def test_truncated_and_corrupted_hdf5_give_input_error(files, tmp_path, kind):
    raw = files[kind].read_bytes()
    reader = READERS[kind]
    n_fail = 0
    for label, data, must_fail in damaged_versions(raw):
        path = tmp_path / f"damaged_{kind}.h5"
        path.write_bytes(data)
        try:
            reader(path)
        except InputError as exc:
            assert str(path) in str(exc), f"{label}: message does not name the file: {exc}"
            n_fail += 1
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{kind} {label}: raw {type(exc).__name__}: {exc}")
        else:
            assert not must_fail, f"{kind} {label}: read without complaint"
    assert n_fail >= 7


@pytest.mark.parametrize("kind", list(READERS))
def test_interrupted_write_marker(files, tmp_path, kind):
    """A file whose writer died before setting ``complete`` is refused as incomplete."""
    path = tmp_path / f"incomplete_{kind}.h5"
    shutil.copy(files[kind], path)
    with h5py.File(path, "r+") as fh:
        del fh.attrs["complete"]
    with pytest.raises(InputError, match="incomplete") as err:
        READERS[kind](path)
    assert str(path) in str(err.value)


def _truncate(src: Path, dst: Path, frac: float = 0.5) -> Path:
    raw = src.read_bytes()
    dst.write_bytes(raw[:int(len(raw) * frac)])
    return dst


def test_cli_refuses_damaged_files_cleanly(files, tmp_path, capsys):
    """Every stage's command: exit 2, the file named, no traceback, no output written."""
    cat = _truncate(files["catalog"], tmp_path / "cat.h5")
    obs = _truncate(files["observations"], tmp_path / "obs.h5")
    bundle = _truncate(files["bundle"], tmp_path / "bundle.h5")
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    (run / "predictions.csv").write_bytes(b"\x00\xff\xfe garbage \x81" * 30)
    cases = [
        (["observe", str(cat), "-o", str(tmp_path / "o.h5")], cat, tmp_path / "o.h5"),
        (["train", str(obs), "--model", "msigma", "-o", str(tmp_path / "r"), "--folds", "2",
          "--no-progress"], obs, tmp_path / "r" / "predictions.csv"),
        (["predict", str(files["members"]), "--model", str(bundle), "-o",
          str(tmp_path / "m.csv")], bundle, tmp_path / "m.csv"),
        (["evaluate", str(run), "-o", str(tmp_path / "rep"), "--no-sampling-test",
          "--no-figures"], run / "predictions.csv", tmp_path / "rep" / "metrics.json"),
        (["bundle", str(run), "-o", str(tmp_path / "b.h5")], run / "predictions.csv",
         tmp_path / "b.h5"),
    ]
    for argv, bad, out in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert str(bad) in err and "Traceback" not in err, err
        assert not out.exists()


# ------------------------------------------------------------------ non-finite values


CAT_FLOAT_COLUMNS = [("halos", c) for c in ("x", "y", "z", "vx", "vy", "vz", "m200c", "r200c")] \
    + [("galaxies", c) for c in ("x", "y", "z", "vx", "vy", "vz", "log10_mstar")]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_catalog_columns(files, tmp_path, bad):
    for group, col in CAT_FLOAT_COLUMNS:
        path = tmp_path / "cat.h5"
        shutil.copy(files["catalog"], path)
        with h5py.File(path, "r+") as fh:
            fh[group][col][2] = bad
        with pytest.raises(InputError, match="non-finite") as err:
            read_catalog(path)
        assert err.value.column == f"{group}/{col}" and err.value.path == str(path)
        if col == "log10_mstar":  # not a column the observe stage reads
            continue
        out = tmp_path / "obs.h5"
        assert main(["observe", str(path), "-o", str(out), "--min-mass", "1e13"]) == 2
        assert not out.exists()


def test_nan_integer_columns_in_memory_are_refused():
    """A NaN host_id used to be cast silently to an arbitrary negative id (no host)."""
    cat = toy_catalog()
    cat.galaxies["host_id"] = cat.galaxies["host_id"].astype(float)
    cat.galaxies["host_id"][3] = np.nan
    with pytest.raises(InputError, match="non-finite") as err:
        cat.validate()
    assert err.value.column == "galaxies/host_id"
    cat = toy_catalog()
    cat.halos["id"] = cat.halos["id"] + 0.5
    with pytest.raises(InputError, match="non-integer"):
        cat.validate()


@pytest.mark.parametrize("name", ["R", "v"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_observations(files, tmp_path, name, bad, capsys):
    path = tmp_path / "obs.h5"
    shutil.copy(files["observations"], path)
    with h5py.File(path, "r+") as fh:
        fh[name][7] = bad
    with pytest.raises(InputError) as err:
        read_observations(path)
    assert err.value.column == name and err.value.path == str(path)
    assert main(["train", str(path), "--model", "msigma", "-o", str(tmp_path / "run"),
                 "--folds", "2", "--no-progress"]) == 2
    assert str(path) in capsys.readouterr().err
    # in memory: refused by training too (it used to fit nonsense and blame the slope)
    obs = toy_observations()
    getattr(obs, name)[7] = bad
    with pytest.raises(InputError) as err:
        cross_validate(obs, "msigma", tmp_path / "mem", folds=2, progress=False)
    assert err.value.column == name
    assert not (tmp_path / "mem" / "predictions.csv").exists()


@pytest.mark.parametrize("col", ["ra", "dec", "z"])
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", ""])
def test_non_finite_members(files, tmp_path, col, bad):
    """A bad member row is reported in its cluster's error column (row named), the other
    cluster is still estimated; with skip_bad_rows the row is skipped and noted."""
    path = tmp_path / "members.csv"
    lines = files["members"].read_text().splitlines()
    parts = lines[1 + 5].split(",")  # data row 5 belongs to cluster 1
    parts[["cluster_id", "ra", "dec", "z"].index(col)] = bad
    lines[1 + 5] = ",".join(parts)
    path.write_text("\n".join(lines) + "\n")
    res = predict_file(path, tmp_path / "masses.csv", model=files["bundle"])
    err = dict(zip(res["cluster_id"], res["error"], strict=True))
    assert err["0"] == "" and "data row 5" in err["1"]
    assert np.isfinite(res["log10_m200c_p50"][0]) and not np.isfinite(res["log10_m200c_p50"][1])
    res = predict_file(path, tmp_path / "masses2.csv", model=files["bundle"], skip_bad_rows=True)
    assert all(e == "" for e in res["error"]) and "data row 5" in res["notes"][1]
    assert res["n_gal"][1] == 19


def test_truncated_or_garbage_members(files, tmp_path, capsys):
    text = files["members"].read_text()
    path = tmp_path / "members.csv"
    path.write_text(text[: text.rindex(",")])  # last line loses its redshift field
    res = predict_file(path, tmp_path / "m.csv", model=files["bundle"])
    assert "no redshift" in res["error"][1] and res["error"][0] == ""
    path.write_bytes(b"\x00\x01\xff\xfe" * 100)
    with pytest.raises(InputError) as err:
        predict_file(path, tmp_path / "m2.csv", model=files["bundle"])
    assert str(path) in str(err.value)
    assert not (tmp_path / "m2.csv").exists()


@pytest.mark.parametrize("col", PRED_COLUMNS)
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_predictions_csv(files, tmp_path, col, bad):
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    lines = (run / "predictions.csv").read_text().splitlines()
    header = lines[0].split(",")
    parts = lines[3].split(",")
    parts[header.index(col)] = bad
    lines[3] = ",".join(parts)
    (run / "predictions.csv").write_text("\n".join(lines) + "\n")
    if bad == "nan" and col == "log10_m200c_pred":
        # a NaN prediction marks a view the model failed on: counted, not a broken file
        loaded = load_run(run)
        assert loaded.n_failed == 1 and np.isfinite(loaded.log_m_pred).all()
        return
    for reader in (load_run, make_bundle):
        with pytest.raises(InputError) as err:
            reader(run)
        assert err.value.column == col and err.value.path == str(run / "predictions.csv")


@pytest.mark.parametrize("damage", ["truncated", "header_only", "empty", "binary"])
def test_damaged_predictions_csv(files, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    p = run / "predictions.csv"
    text = p.read_text()
    p.write_bytes({"truncated": text[: len(text) // 2].encode(),
                   "header_only": text.splitlines()[0].encode() + b"\n",
                   "empty": b"",
                   "binary": b"\x89HDF\r\n\x1a\n\x00\xff" * 20}[damage])
    for reader in (load_run, make_bundle):
        if damage == "truncated" and reader is load_run:
            # a cut in the middle of a row leaves missing fields: refused, or (if the cut
            # falls on a row boundary) fewer rows: then nothing claims the rest is there
            try:
                run_obj = reader(run)
            except InputError as exc:
                assert str(p) in str(exc)
            else:
                assert run_obj.n_views < text.count("\n") - 1
            continue
        with pytest.raises(InputError) as err:
            reader(run)
        assert str(p) in str(err.value)


def test_damaged_run_settings_json(files, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    (run / "settings.json").write_text('{"model": "msigma", "folds": ')
    with pytest.raises(InputError, match="settings.json"):
        load_run(run)
    with pytest.raises(InputError, match="settings.json"):
        make_bundle(run)
    with pytest.raises(InputError, match="settings.json"):
        cross_validate(files["observations"], "msigma", run, folds=3, progress=False)


# ------------------------------------------------------------------ options outside their sense


@pytest.mark.parametrize("argv, column", [
    (["universe", "--box", "50", "--cosmology", "{bad"], "cosmology"),
    (["universe", "--box", "50", "--cosmology", "[1, 2]"], "cosmology"),
    (["universe", "--box", "50", "--mstar-min", "nan"], "mstar_min"),
    (["universe", "--box", "50", "--mstar-min", "inf"], "mstar_min"),
    (["universe", "--box", "50", "--max-mass", "inf"], "max_mass"),
    (["universe", "--box", "50", "--seed", "-1"], "seed"),
    (["universe", "--box", "50", "--redshift", "nan"], "redshift"),
])
def test_cli_universe_bad_options(tmp_path, capsys, argv, column):
    out = tmp_path / "u.h5"
    assert main([*argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"column '{column}'" in err and "Traceback" not in err
    assert not out.exists()


def test_cli_universe_bad_units(tmp_path, capsys, files):
    cat = read_catalog(files["catalog"])
    table = tmp_path / "table.h5"
    with h5py.File(table, "w") as fh:
        for grp, cols in (("halos", cat.halos), ("galaxies", cat.galaxies)):
            for c, v in cols.items():
                fh.create_dataset(f"{grp}/{c}", data=v)
    out = tmp_path / "u.h5"
    base = ["universe", "--from", str(table), "--format", "table", "--box", "40",
            "--redshift", "0.117", "-o", str(out)]
    assert main([*base, "--units", "position"]) == 2
    assert "column 'units'" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--units", "position=Mpc/h"]) == 0


@pytest.mark.parametrize("setting", [
    {"epochs": 0}, {"epochs": -1}, {"batch_size": 0}, {"lr": float("nan")}, {"lr": -1.0},
    {"dropout": 2.0}, {"patience": -2}, {"num_threads": 0}, {"bandwidth": 0.0},
])
def test_cnn_settings_outside_their_sense(tmp_path, setting):
    """They used to train zero epochs silently or fail deep inside torch."""
    from dynmass.models import get_model

    key = next(iter(setting))
    for name in ("cnn1d", "cnn2d"):
        with pytest.raises(InputError) as err:
            get_model(name, **setting)
        assert err.value.column == key
    with pytest.raises(InputError):
        cross_validate(toy_observations(), "cnn1d", tmp_path / "run", folds=2,
                       model_settings=setting, progress=False)
    assert not (tmp_path / "run").exists()
