"""CNN1D / CNN2D (Ho et al. 2019): architecture, learning a toy M-sigma world, determinism,
save/load, settings mismatch and exact resumption from a checkpoint."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from dynmass.errors import InputError, SettingsMismatchError
from dynmass.folds import split_by_halo
from dynmass.models import get_model, load_model
from dynmass.models.cnn import CNN1D, CNN2D, build_network, resolve_device
from dynmass.testing import Bound, StochasticCheck
from dynmass.testing.worlds import ALPHA, SIGMA15_KMS, evrard_views


@pytest.fixture(scope="module")
def toy_train():
    return evrard_views(150, 2, seed=0)


@pytest.fixture(scope="module")
def toy_test():
    return evrard_views(60, 1, seed=1)


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


def learns_evrard(name: str, seed: int, broken: str | None = None) -> dict[str, float]:
    """Train ``name`` on 150 hosts x 2 views of the toy Evrard world (seed ``2 seed``), test on
    60 new hosts (seed ``2 seed + 1``), model seed ``seed``.

    Statistics: scatter of ``pred - true`` over the scatter of a constant predictor and over
    the scatter of the ideal estimator (each view's sample sigma inverted through the true
    relation), and the mean bias (dex). ``broken``: ``"constant"`` predicts the training mean,
    ``"shuffled"`` trains on host masses shuffled among hosts, ``"units"`` halves the test
    velocities (a unit bug).
    """
    train, test = evrard_views(150, 2, seed=2 * seed), evrard_views(60, 1, seed=2 * seed + 1)
    if broken == "shuffled":
        perm = np.random.default_rng(seed).permutation(150)
        train.clusters["m200c"] = train.clusters["m200c"][::2][perm].repeat(2)
    y = test.log10_m200c()
    sample_sigma = test.clusters["sigma_v"]
    if broken == "units":
        test.v = 0.5 * test.v
    if broken == "constant":
        pred = np.full(test.n_views, train.log10_m200c().mean())
        hist_ok = True
    else:
        model = get_model(name, batch_size=25, num_threads=1).fit(train, seed=seed)
        pred = model.predict(test)
        hist = model.extra["history"]
        hist_ok = hist[model.extra["best_epoch"]]["val_loss"] == min(h["val_loss"] for h in hist)
    assert hist_ok, "the kept weights must be those of the best validation epoch"
    ideal = 15 + np.log10(sample_sigma / SIGMA15_KMS) / ALPHA
    scatter = np.std(pred - y)
    return {"scatter_over_constant": scatter / np.std(y),
            "scatter_over_ideal": scatter / np.std(ideal - y),
            "bias": float(np.mean(pred - y))}


STOCHASTIC = {
    f"learns_evrard[{name}]": StochasticCheck(
        run=partial(learns_evrard, name), n_seeds=12,
        bounds={"scatter_over_constant": Bound(hi=0.38),
                "scatter_over_ideal": Bound(hi=1.85),
                "bias": Bound(-0.2, 0.2)},
        broken={b: partial(learns_evrard, name, broken=b)
                for b in ("constant", "shuffled", "units")})
    for name in ("cnn1d", "cnn2d")
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn1d", "cnn2d"])
def test_cnn_learns_sigma_mass_relation(name):
    """On a world where mass sets the velocity width exactly, the CNN comes close to the
    ideal estimator (the sample standard deviation inverted through the true relation).

    Measured over seeds 0-11 (``python tests/calibrate_bounds.py --only learns_evrard``;
    ``tests/bounds/``), as mean, sd and range:

    * cnn1d: scatter / constant-predictor scatter 0.229, 0.028, [0.184, 0.287]; scatter /
      ideal 1.11, 0.13, [0.95, 1.42]; bias -0.005, 0.038, [-0.053, +0.070] dex.
    * cnn2d: 0.245, 0.022, [0.208, 0.285]; 1.19, 0.13, [0.97, 1.39]; bias +0.011, 0.030,
      [-0.023, +0.073] dex (seed 0 gives +0.061: the old bound of 0.06 was 1.7 sd).

    Bounds (>= 5 sd from every mean): scatter / constant < 0.38, scatter / ideal < 1.85,
    |bias| < 0.2 dex. A constant predictor (ratio 1), training on shuffled masses (~1) and
    test velocities halved as by a unit bug (bias about -0.9 dex) each fail them.
    """
    STOCHASTIC[f"learns_evrard[{name}]"].check()


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
    other = evrard_views(5, 1, seed=3, vcut=2200.0)
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
