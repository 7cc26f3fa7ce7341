"""CNN1D / CNN2D (Ho et al. 2019): architecture, learning a toy M-sigma world, determinism,
save/load, settings mismatch and exact resumption from a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynmass.errors import InputError, SettingsMismatchError
from dynmass.models import get_model, load_model
from dynmass.models.cnn import CNN1D, CNN2D, build_network, resolve_device, split_by_halo
from dynmass.observations import from_views

SIGMA15_KMS, ALPHA = 1082.9, 0.3361  # Evrard et al. 2008, sigma_DM(M200c)


def toy_obs(n_halos: int, n_los: int, seed: int, vcut: float = 3000.0, lo: float = 13.5,
            hi: float = 15.5, halo_id_offset: int = 0):
    """Views whose velocities are Gaussian with the Evrard et al. 2008 sigma(M) exactly,
    50-100 galaxies each, R uniform on the disc of radius 1.6 Mpc/h; halo ids start at
    ``halo_id_offset``."""
    rng = np.random.default_rng(seed)
    logm = rng.uniform(lo, hi, n_halos)
    views, hid, los, mass = [], [], [], []
    for h in range(n_halos):
        sigma = SIGMA15_KMS * 10 ** (ALPHA * (logm[h] - 15))
        for j in range(n_los):
            n = int(rng.integers(50, 101))
            v = rng.normal(0, sigma, 3 * n)
            v = v[np.abs(v) <= vcut][:n]
            views.append((1.6 * np.sqrt(rng.random(len(v))), v))
            hid.append(halo_id_offset + h)
            los.append(j)
            mass.append(10 ** logm[h])
    return from_views(views, {"aperture": 1.6, "vcut": vcut},
                      clusters={"halo_id": np.array(hid), "los": np.array(los),
                                "m200c": np.array(mass)})


@pytest.fixture(scope="module")
def toy_train():
    return toy_obs(150, 2, seed=0)


@pytest.fixture(scope="module")
def toy_test():
    return toy_obs(60, 1, seed=1)


def test_architecture_matches_paper():
    net1 = build_network("cnn1d", 48, 0.25)
    net2 = build_network("cnn2d", 48, 0.25)
    assert net1(torch.zeros(7, 1, 48)).shape == (7, 1)
    assert net2(torch.zeros(7, 48, 48)).shape == (7, 1)
    convs1 = [m for m in net1 if isinstance(m, torch.nn.Conv1d)]
    convs2 = [m for m in net2 if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs1] == [
        (1, 10, 5), (10, 5, 3)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs2] == [
        (48, 24, 5), (24, 10, 3)]
    dense1 = [m.out_features for m in net1 if isinstance(m, torch.nn.Linear)]
    assert dense1 == [128, 64, 1]
    # flattened size after pooling: 5 * (42 // 2) and 10 * (42 // 4)
    assert next(m for m in net1 if isinstance(m, torch.nn.Linear)).in_features == 105
    assert next(m for m in net2 if isinstance(m, torch.nn.Linear)).in_features == 100
    assert [m.kernel_size for m in net2 if isinstance(m, torch.nn.MaxPool1d)] == [4]
    assert [m.p for m in net1 if isinstance(m, torch.nn.Dropout)] == [0.25]


@pytest.mark.parametrize("name", ["cnn1d", "cnn2d"])
def test_cnn_learns_sigma_mass_relation(name, toy_train, toy_test):
    """On a world where mass sets the velocity width exactly, the CNN comes close to the
    ideal estimator (the sample standard deviation inverted through the true relation)."""
    model = get_model(name, batch_size=25, num_threads=1).fit(toy_train, seed=0)
    y = toy_test.log10_m200c()
    pred = model.predict(toy_test)
    scatter = np.std(pred - y)
    constant = np.std(y)
    sample_sigma = toy_test.clusters["sigma_v"]
    ideal = 15 + np.log10(sample_sigma / SIGMA15_KMS) / ALPHA
    ideal_scatter = np.std(ideal - y)
    assert constant > 0.5 and ideal_scatter < 0.12
    assert scatter < 0.3 * constant
    assert scatter < 1.6 * ideal_scatter, (scatter, ideal_scatter)
    assert abs(np.mean(pred - y)) < 0.06
    hist = model.extra["history"]
    assert hist[model.extra["best_epoch"]]["val_loss"] == min(h["val_loss"] for h in hist)


def test_same_seed_same_predictions_and_save_load(tmp_path, toy_train, toy_test):
    kw = dict(epochs=3, num_threads=1)
    a = CNN2D(**kw).fit(toy_train, seed=5)
    b = CNN2D(**kw).fit(toy_train, seed=5)
    c = CNN2D(**kw).fit(toy_train, seed=6)
    pa = a.predict(toy_test)
    np.testing.assert_array_equal(pa, b.predict(toy_test))
    assert not np.allclose(pa, c.predict(toy_test))
    path = a.save(tmp_path / "m.h5")
    back = load_model(path)
    assert isinstance(back, CNN2D) and back.settings == a.settings
    np.testing.assert_array_equal(back.predict(toy_test), pa)
    # prediction in small batches gives the same numbers as in one batch
    back.settings["predict_batch_size"] = 7
    np.testing.assert_allclose(back.predict(toy_test), pa, rtol=0, atol=1e-6)


def test_other_vcut_is_refused(toy_train):
    model = CNN1D(epochs=1, num_threads=1).fit(toy_train.subset(np.arange(40)), seed=0)
    other = toy_obs(5, 1, seed=3, vcut=2200.0)
    with pytest.raises(SettingsMismatchError, match="vcut"):
        model.predict(other)


def test_checkpoint_resume_is_exact(tmp_path, toy_train, toy_test):
    sub = toy_train.subset(np.arange(120))
    kw = dict(epochs=4, patience=0, num_threads=1)
    full = CNN1D(**kw).fit(sub, seed=2).predict(toy_test)
    ckpt = tmp_path / "fit.ckpt.pt"

    def boom(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        CNN1D(**kw).fit(sub, seed=2, checkpoint=ckpt, epoch_callback=boom)
    assert ckpt.exists()
    seen = []
    resumed = CNN1D(**kw).fit(sub, seed=2, checkpoint=ckpt,
                              epoch_callback=lambda e, r: seen.append(e))
    assert seen == [2, 3], "resumption must continue after the last finished epoch"
    assert len(resumed.extra["history"]) == 4
    np.testing.assert_array_equal(resumed.predict(toy_test), full)
    # a checkpoint of another fit (other seed) is ignored, not mixed in
    other = CNN1D(**kw).fit(sub, seed=3, checkpoint=ckpt)
    assert len(other.extra["history"]) == 4 and not other.extra["resumed"]


def test_validation_split_is_by_halo():
    halo = np.repeat(np.arange(30), 3)
    train, val = split_by_halo(halo, 0.1, seed=0)
    assert len(val) == 9 and not set(halo[train]) & set(halo[val])
    assert len(np.unique(np.concatenate([train, val]))) == len(halo)
    train0, val0 = split_by_halo(halo, 0.0, seed=0)
    assert len(val0) == 0 and len(train0) == len(halo)


def test_bad_settings_and_devices(toy_train):
    with pytest.raises(InputError, match="unknown settings"):
        CNN1D(epoch=3)
    with pytest.raises(InputError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="cuda"):
            CNN1D(device="cuda").fit(toy_train.subset(np.arange(10)), seed=0)
        assert resolve_device("cuda", strict=False).type == "cpu"
    assert resolve_device("cpu").type == "cpu"
    bad = toy_train.subset(np.arange(10))
    bad.clusters["m200c"] = bad.clusters["m200c"].copy()
    bad.clusters["m200c"][3] = np.nan
    with pytest.raises(InputError, match="m200c"):
        CNN1D(epochs=1).fit(bad, seed=0)
