"""DeepSet on member lists (Deep Sets, Zaheer et al. 2017): permutation and padding invariance,
invariance in expectation to random dilution, learning a toy M-sigma world, save/load,
checkpoint resumption, cross-validation, the v-flip, the context hook and the featurizer."""

from __future__ import annotations

import dataclasses
import json
from functools import partial

import numpy as np
import pytest
import torch

from dynmass.errors import InputError
from dynmass.features_members import MemberListFeaturizer, member_arrays, n_over
from dynmass.models import MODEL_NAMES, get_model, load_model
from dynmass.models.deepset import DeepSet
from dynmass.models.setnet import DeepSetNet
from dynmass.observations import Observations
from dynmass.testing import Bound, StochasticCheck
from dynmass.testing.worlds import ALPHA, SIGMA15_KMS, cylinder_views, evrard_views
from dynmass.train import cross_validate

#: Small, quick settings for the unit tests (a few epochs on a few views).
FAST = {"epochs": 3, "batch_size": 25, "phi_hidden": [16, 16], "rho_hidden": [16],
        "num_threads": 1, "patience": 0}
#: The settings of the learning checks: a smaller network than the default, same design.
LEARN = {"epochs": 40, "batch_size": 25, "phi_hidden": [32, 32], "rho_hidden": [32],
         "patience": 6, "num_threads": 1}


@pytest.fixture(scope="module")
def toy_train() -> Observations:
    return evrard_views(60, 2, seed=0)


@pytest.fixture(scope="module")
def toy_test() -> Observations:
    return evrard_views(20, 1, seed=1)


@pytest.fixture(scope="module")
def fitted(toy_train) -> DeepSet:
    return DeepSet(**FAST).fit(toy_train, seed=0)


def permuted(obs: Observations, seed: int) -> Observations:
    """The same views with the galaxies of each view in a random order."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate([obs.offsets[k] + rng.permutation(n) for k, n in enumerate(obs.n_gal)])
    return Observations(clusters=dict(obs.clusters), R=obs.R[rows], v=obs.v[rows],
                        is_member=obs.is_member[rows], galaxy_index=obs.galaxy_index[rows],
                        offsets=obs.offsets.copy(), settings=dict(obs.settings))


# ----------------------------------------------------------------------------- invariances


def test_registered():
    assert MODEL_NAMES["deepset"] == "dynmass.models.deepset:DeepSet"
    assert isinstance(get_model("deepset"), DeepSet)


def test_permutation_invariance(fitted, toy_test):
    pred = fitted.predict(toy_test)
    np.testing.assert_allclose(fitted.predict(permuted(toy_test, 7)), pred, rtol=0, atol=1e-6)
    # views above n_max keep a random subset, chosen independently of the galaxies' order
    small = DeepSet(**dict(FAST, n_max=30)).fit(evrard_views(20, 2, seed=4), seed=1)
    assert small.extra["n_views_over_n_max"] == 40
    np.testing.assert_allclose(small.predict(permuted(toy_test, 8)), small.predict(toy_test),
                               rtol=0, atol=1e-6)


def test_padding_and_mask(fitted, toy_test):
    """Whatever sits in the masked slots (huge numbers, NaN), and however many of them there
    are, the output is the same; and the views' order does not matter."""
    X = fitted.featurizer.transform(toy_test)
    pred = fitted.predict_features(X)
    garbage = X.copy()
    pad = garbage[..., -1] == 0
    assert pad.any()
    garbage[pad, :-1] = np.float32(1e30)
    garbage[pad, 0] = np.nan
    wide = np.concatenate([garbage, np.full((len(X), 17, X.shape[2]), 7.0, np.float32)], 1)
    wide[:, -17:, -1] = 0
    np.testing.assert_allclose(fitted.predict_features(wide), pred, rtol=0, atol=1e-6)
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(fitted.predict_features(X[order]), pred[order], rtol=0,
                               atol=1e-6)
    # an empty view (all slots masked) gets a finite prediction
    empty = X[:1].copy()
    empty[..., -1] = 0
    assert np.isfinite(fitted.predict_features(empty)).all()


def test_network_is_permutation_invariant_untrained():
    torch.manual_seed(3)
    net = DeepSetNet(n_features=2, phi_hidden=(8, 8), rho_hidden=(8,)).eval()
    x = torch.rand(5, 12, 3)
    x[..., -1] = (torch.rand(5, 12) < 0.6).float()
    with torch.no_grad():
        torch.testing.assert_close(net(x[:, torch.randperm(12)]), net(x), rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="input must be"):
        net(torch.rand(5, 12, 4))


def test_flip_v_negates_velocities(fitted, toy_test):
    """The augmentation of a member list is the member list of the mirrored view."""
    X = fitted._as_input(fitted.featurizer.transform(toy_test))
    mirror = dataclasses.replace(toy_test, v=-toy_test.v)
    flipped = fitted._flip_v(X)
    np.testing.assert_array_equal(flipped, fitted._as_input(fitted.featurizer.transform(mirror)))
    np.testing.assert_array_equal(flipped[..., 0], X[..., 0])
    np.testing.assert_allclose(fitted.predict(mirror), fitted.predict_features(flipped),
                               rtol=0, atol=1e-6)


def learns_evrard(seed: int, broken: str | None = None) -> dict[str, float]:
    """Train DeepSet (``LEARN`` settings) on 100 hosts x 2 views of the toy Evrard world
    (seed ``2 seed``), test on 60 new hosts (seed ``2 seed + 1``), model seed ``seed``.

    Statistics as in ``tests/test_cnn.py``: scatter of ``pred - true`` over the scatter of a
    constant predictor (the prior width) and over the scatter of the ideal estimator (each
    view's sample sigma inverted through the true relation); mean bias (dex). ``broken``:
    ``"constant"`` predicts the training mean, ``"shuffled"`` trains on host masses shuffled
    among hosts, ``"units"`` halves the test velocities (a unit bug).
    """
    train, test = evrard_views(100, 2, seed=2 * seed), evrard_views(60, 1, seed=2 * seed + 1)
    if broken == "shuffled":
        perm = np.random.default_rng(seed).permutation(100)
        train.clusters["m200c"] = train.clusters["m200c"][::2][perm].repeat(2)
    y = test.log10_m200c()
    ideal = 15 + np.log10(test.clusters["sigma_v"] / SIGMA15_KMS) / ALPHA
    if broken == "units":
        test.v = 0.5 * test.v
    if broken == "constant":
        pred = np.full(test.n_views, train.log10_m200c().mean())
    else:
        pred = DeepSet(**LEARN).fit(train, seed=seed).predict(test)
    scatter = np.std(pred - y)
    return {"scatter_over_constant": scatter / np.std(y),
            "scatter_over_ideal": scatter / np.std(ideal - y),
            "bias": float(np.mean(pred - y))}


class _SumPoolNet(DeepSetNet):
    """The broken variant: the mean times (number of galaxies / 20), i.e. a scaled sum that
    grows with the number of galaxies observed."""

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return super().pool(x) * (x[..., -1].sum(1, keepdim=True) / 20.0)


class _SumPoolDeepSet(DeepSet):
    def _new_network(self) -> torch.nn.Module:
        s = self.settings
        return _SumPoolNet(2, 0, s["phi_hidden"], s["rho_hidden"], float(s["dropout"]))


def dilution(seed: int, broken: str | None = None) -> dict[str, float]:
    """Train DeepSet (``LEARN`` settings) on toy cylinders whose member count grows with mass
    (:func:`~dynmass.testing.worlds.cylinder_views`: 150 hosts x 2 views, members + uniform
    interlopers), predict 100 new hosts with all their galaxies and with each galaxy kept with
    probability 1/2 (:meth:`Observations.resample`).

    Statistics: ``shift`` = |mean(pred(diluted) - pred(all))| over the scatter of
    ``pred(all) - true`` (a model that counts galaxies shifts by about its richness slope x
    log10 2), and ``scatter_over_constant`` (the model learned something). ``broken``:
    ``"sum"`` pools a sum-like ``mean x N / 20`` instead of the mean; ``"richness"`` predicts
    from a least-squares fit of log10 M on log10 N; ``"constant"`` predicts the training
    mean (no shift, but nothing learned).
    """
    rng = np.random.default_rng(seed)
    train = cylinder_views(rng, n_halos=150, n_los=2)
    test = cylinder_views(rng, n_halos=100, n_los=1)
    thin = test.resample(0.5, seed=seed + 1000, min_gal=3)
    y = test.log10_m200c()
    if broken == "constant":
        pred = pred_thin = np.full(test.n_views, train.log10_m200c().mean())
    elif broken == "richness":
        coef = np.polyfit(np.log10(train.n_gal), train.log10_m200c(), 1)
        pred, pred_thin = (np.polyval(coef, np.log10(o.n_gal)) for o in (test, thin))
    else:
        cls = _SumPoolDeepSet if broken == "sum" else DeepSet
        model = cls(**LEARN).fit(train, seed=seed)
        pred, pred_thin = model.predict(test), model.predict(thin)
    scatter = np.std(pred - y)
    return {"shift": abs(float(np.mean(pred_thin - pred))) / scatter,
            "scatter_over_constant": scatter / np.std(y)}


def central_cue(seed: int, broken: str | None = None) -> dict[str, float]:
    """Train DeepSet (``LEARN`` settings) on toy cylinders (150 hosts x 2 views) that hold,
    as ``observe`` writes them from the true centre, a central galaxy at ``R = v = 0``, and
    predict 100 new hosts with and without their central.

    Statistics: ``central_shift`` = |median(pred(no central) - pred(all))| over the scatter
    of ``pred(all) - true``: a mean-pooled model that learned a sharp ``phi`` at the origin
    reads ``1 / N``, i.e. richness, and jumps when the central is missing (as it is for every
    real cluster centred on its members); ``scatter_over_constant`` (it learned something).
    ``broken``: ``"no_member_dropout"`` trains with ``member_keep = [1, 1]``.
    """
    rng = np.random.default_rng(seed)
    train = cylinder_views(rng, n_halos=150, n_los=2, central=True)
    test = cylinder_views(rng, n_halos=100, n_los=1, central=True)
    at_origin = (test.R == 0) & (test.v == 0)
    assert np.array_equal(np.bincount(test.view_of_galaxy[at_origin], minlength=test.n_views),
                          np.ones(test.n_views))
    no_central = test.select_galaxies(~at_origin)
    keep = [1.0, 1.0] if broken == "no_member_dropout" else DeepSet.defaults["member_keep"]
    model = DeepSet(**dict(LEARN, member_keep=keep)).fit(train, seed=seed)
    pred, y = model.predict(test), test.log10_m200c()
    scatter = np.std(pred - y)
    return {"central_shift": abs(float(np.median(model.predict(no_central) - pred))) / scatter,
            "scatter_over_constant": scatter / np.std(y)}


STOCHASTIC = {
    "learns_evrard": StochasticCheck(
        run=learns_evrard, n_seeds=10,
        bounds={"scatter_over_constant": Bound(hi=0.41), "scatter_over_ideal": Bound(hi=1.9),
                "bias": Bound(-0.2, 0.2)},
        broken={b: partial(learns_evrard, broken=b) for b in ("constant", "shuffled", "units")}),
    "dilution": StochasticCheck(
        run=dilution, n_seeds=10,
        bounds={"shift": Bound(hi=0.45), "scatter_over_constant": Bound(hi=0.97)},
        broken={b: partial(dilution, broken=b) for b in ("sum", "richness", "constant")}),
    "central_cue": StochasticCheck(
        run=central_cue, n_seeds=10,
        bounds={"central_shift": Bound(hi=0.6), "scatter_over_constant": Bound(hi=0.97)},
        broken={"no_member_dropout": partial(central_cue, broken="no_member_dropout")}),
}


@pytest.mark.slow
def test_deepset_learns_sigma_mass_relation():
    """On the toy Evrard world (mass sets the velocity width exactly) DeepSet comes close to
    the ideal estimator, with the scatter well below the prior width.

    Measured over seeds 0-9 (``python tests/calibrate_bounds.py --only test_deepset``;
    ``tests/bounds/``), as mean, sd and range, with member dropout (the default): scatter /
    constant-predictor scatter 0.243, 0.039, [0.199, 0.341]; scatter / ideal 1.18, 0.17,
    [0.95, 1.59]; bias +0.006, 0.039, [-0.062, +0.057] dex (without it 0.244, 0.025 and 1.18,
    0.13): as good as the CNNs on the same world (``tests/test_cnn.py``).

    Bounds (>= 4 sd from every mean): scatter / constant < 0.41, scatter / ideal < 1.9,
    |bias| < 0.2 dex. A constant predictor, training on shuffled masses and test velocities
    halved (a unit bug) each fail them.
    """
    STOCHASTIC["learns_evrard"].check()


@pytest.mark.slow
def test_deepset_is_invariant_to_random_dilution():
    """Keeping each galaxy with probability 1/2 moves the mean prediction by a small fraction
    of the model's scatter, on a world where richness grows with mass (so a model that counted
    galaxies would shift a lot).

    Measured over seeds 0-9 (``python tests/calibrate_bounds.py --only test_deepset``), as
    mean, sd and range: shift (|mean change| / scatter) 0.156, 0.059, [0.063, 0.243] (the
    mean pooling is exactly invariant only in the mean of phi; rho is not linear, so noisier
    means of the diluted views move the prediction a little); scatter / constant-predictor
    scatter 0.722, 0.038, [0.679, 0.790] (these cylinders hold 4-80 galaxies).

    Bounds: shift < 0.45 (5.0 sd), scatter / constant < 0.97 (6.6 sd). The sum-like pooling
    (shift 2.2-2.4 over seeds 0-2) and the richness fit (3.3-3.9) fail the first, a constant
    predictor the second.
    """
    STOCHASTIC["dilution"].check()


@pytest.mark.slow
def test_deepset_does_not_read_richness_from_the_central():
    """Member dropout (the default ``member_keep``) keeps the set model from weighing a
    cluster by ``1 / N``, the weight of the central galaxy at ``R = v = 0`` in the mean: the
    prediction barely moves when the central is missing.

    Measured over seeds 0-9 (``python tests/calibrate_bounds.py --only test_deepset``), as
    mean, sd and range: central_shift (|median change| / scatter) 0.139, 0.079, [0.040,
    0.282]; scatter / constant-predictor scatter 0.690, 0.051, [0.621, 0.757]. Bounds:
    central_shift < 0.6 (5.9 sd), scatter / constant < 0.97 (5.4 sd). Without member dropout
    the shift is 0.67-1.15 scatters (seeds 0-2), so the first bound catches it.
    """
    STOCHASTIC["central_cue"].check()


def test_member_dropout_keeps_a_subset_and_only_in_training():
    torch.manual_seed(0)
    net = DeepSetNet(n_features=2, phi_hidden=(8,), rho_hidden=(8,), member_keep=(0.25, 1.0),
                     min_keep=3)
    mask = torch.zeros(400, 50, dtype=torch.bool)
    n = torch.randint(1, 51, (400,))
    mask[torch.arange(50) < n[:, None]] = True
    kept = net.drop_members(mask)
    assert not (kept & ~mask).any()  # a subset of the galaxies
    assert (kept.sum(1) >= torch.clamp(n, max=3)).all()  # at least min_keep (or all)
    frac = (kept.sum(1).float() / n.float())[n >= 40]
    # keep probability log-uniform in [0.25, 1]: mean (1 - 0.25) / ln 4 = 0.541
    assert 0.48 < float(frac.mean()) < 0.60 and float(frac.min()) > 0.1
    x = torch.rand(6, 50, 3)
    x[..., -1] = mask[:6].float()
    net.eval()
    with torch.no_grad():  # evaluation mode drops nothing: the same output every call
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)
    with pytest.raises(InputError, match="member_keep"):
        DeepSetNet(member_keep=(0.0, 1.0))
    with pytest.raises(InputError, match="member_keep"):
        DeepSet(member_keep=[0.9, 0.5])


def test_models_saved_before_member_dropout_load_as_trained_without(tmp_path, fitted):
    """A model file from before ``member_keep`` existed reads back with ``[1, 1]``."""
    import h5py

    path = fitted.save(tmp_path / "old.h5")
    with h5py.File(path, "r+") as fh:
        group = next(g for g in (fh, *fh.values()) if "settings" in g.attrs)
        settings = json.loads(group.attrs["settings"])
        del settings["member_keep"]
        group.attrs["settings"] = json.dumps(settings)
    assert load_model(path).settings["member_keep"] == [1.0, 1.0]
    assert load_model(fitted.save(tmp_path / "new.h5")).settings["member_keep"] == [0.25, 1.0]


# ----------------------------------------------------------------------------- estimator


def test_same_seed_same_predictions_and_save_load(tmp_path, fitted, toy_train, toy_test):
    pred = fitted.predict(toy_test)
    np.testing.assert_array_equal(DeepSet(**FAST).fit(toy_train, seed=0).predict(toy_test), pred)
    assert not np.allclose(DeepSet(**FAST).fit(toy_train, seed=1).predict(toy_test), pred)
    back = load_model(fitted.save(tmp_path / "m.h5"))
    assert isinstance(back, DeepSet) and back.settings == fitted.settings
    np.testing.assert_array_equal(back.predict(toy_test), pred)
    back.settings["predict_batch_size"] = 7  # batches of other sizes: same numbers
    np.testing.assert_allclose(back.predict(toy_test), pred, rtol=0, atol=1e-6)


def test_checkpoint_resume_is_exact(tmp_path, toy_train, toy_test):
    kw = dict(FAST, epochs=4)
    full = DeepSet(**kw).fit(toy_train, seed=2).predict(toy_test)
    ckpt = tmp_path / "fit.ckpt.pt"

    def boom(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        DeepSet(**kw).fit(toy_train, seed=2, checkpoint=ckpt, epoch_callback=boom)
    seen = []
    resumed = DeepSet(**kw).fit(toy_train, seed=2, checkpoint=ckpt,
                                epoch_callback=lambda e, r: seen.append(e))
    assert seen == [2, 3] and resumed.extra["resumed"]
    np.testing.assert_array_equal(resumed.predict(toy_test), full)


def test_cross_validate_runs_and_resumes(tmp_path):
    obs = evrard_views(30, 2, seed=5, halo_id_offset=1000)
    kw = dict(folds=3, seed=4, model_settings=FAST, device="cpu", progress=False)
    ref = cross_validate(obs, "deepset", tmp_path / "ref", **kw)

    def kill_fold_1(epoch, record, state={"fits": 0}):  # noqa: B006
        state["fits"] += epoch == 0
        if state["fits"] == 2 and epoch == 1:
            raise KeyboardInterrupt("simulated kill inside fold 1")

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        cross_validate(obs, "deepset", run, epoch_callback=kill_fold_1, **kw)
    assert (run / "fold_00.h5").exists() and (run / "fold_01.ckpt.pt").exists()
    assert list((run / "cache").glob("members_*.npy"))
    seen = []
    cross_validate(obs, "deepset", run, fold_callback=lambda f, m: seen.append(f), **kw)
    assert seen == [1, 2]
    a, b = (np.genfromtxt(r / "predictions.csv", delimiter=",", names=True) for r in (ref, run))
    np.testing.assert_array_equal(a["log10_m200c_pred"], b["log10_m200c_pred"])
    assert np.isfinite(a["log10_m200c_pred"]).all()


def test_context_hook(tmp_path, toy_train, toy_test):
    train, test = permuted(toy_train, 1), permuted(toy_test, 2)
    rng = np.random.default_rng(0)
    for o in (train, test):
        o.clusters["survey_sampling_rate"] = rng.uniform(0.05, 1.0, o.n_views)
    model = DeepSet(**dict(FAST, context=["survey_sampling_rate"])).fit(train, seed=0)
    assert model.featurizer.n_channels == 4
    X = model.featurizer.transform(test)
    np.testing.assert_array_equal(X[..., 2], np.repeat(test.clusters["survey_sampling_rate"][
        :, None], X.shape[1], 1).astype(np.float32))  # in every slot, padding included
    pred = model.predict(test)
    assert np.isfinite(pred).all()
    np.testing.assert_array_equal(load_model(model.save(tmp_path / "c.h5")).predict(test), pred)
    with pytest.raises(InputError, match="survey_sampling_rate"):
        model.predict(toy_test)  # the column is needed at prediction time
    for bad in ({"context": ["m200c"]}, {"context": ["n_members_true"]},
                {"galaxy_columns": ["is_member"]}, {"galaxy_columns": ["nope"]}):
        with pytest.raises(InputError):
            DeepSet(**dict(FAST, **bad)).fit(toy_train, seed=0)


def test_context_takes_the_survey_models_inputs(toy_test):
    """``context`` may name the survey model's inputs: ``sampling_rate`` is read from the
    per-view draws as log10, ``redshift`` from the snapshot; missing ones are refused."""
    obs = permuted(toy_test, 3)
    obs.clusters["survey_sampling_rate"] = np.random.default_rng(1).uniform(0.05, 1.0, obs.n_views)
    obs.settings = {**obs.settings, "redshift": 0.4}
    X = member_arrays(obs, n_max=64, context=["sampling_rate", "redshift"])
    np.testing.assert_allclose(X[:, 0, 2], np.log10(obs.clusters["survey_sampling_rate"]),
                               rtol=1e-6)
    np.testing.assert_array_equal(X[:, :, 3], np.float32(0.4))
    with pytest.raises(InputError, match="selection_limit"):
        member_arrays(obs, n_max=64, context=["selection_limit"])


def test_bad_settings():
    for bad in ({"phi_hidden": []}, {"phi_hidden": [0]}, {"rho_hidden": "64"}, {"n_max": 0},
                {"lr": -1.0}, {"dropout": 1.0}, {"context": "survey_sampling_rate"},
                {"epochs": 0}, {"epoch": 3}, {"pool_norm": "yes"}):
        with pytest.raises(InputError):
            DeepSet(**bad)
    with pytest.raises(InputError, match="member lists"):
        DeepSet(**FAST).fit(evrard_views(5, 1, seed=0), seed=0, features=np.zeros((5, 8, 4)))


# ----------------------------------------------------------------------------- featurizer


def test_member_lists(tmp_path, toy_test):
    obs = toy_test
    X = member_arrays(obs, n_max=256)
    n = obs.n_gal
    assert X.shape == (obs.n_views, n.max(), 3) and X.dtype == np.float32
    assert (X[..., -1].sum(1) == n).all()
    k = int(np.argmax(n))
    R, v = obs.view(k)
    np.testing.assert_allclose(X[k, :, 0], (R / obs.aperture).astype(np.float32))
    np.testing.assert_allclose(X[k, :, 1], (v / obs.vcut).astype(np.float32))
    # views above n_max: a seeded subset, the same every time, of the view's own galaxies
    small = member_arrays(obs, n_max=20, seed=3)
    assert small.shape[1] == 20 and n_over(obs, 20) == obs.n_views
    np.testing.assert_array_equal(small, member_arrays(obs, n_max=20, seed=3))
    assert not np.array_equal(small, member_arrays(obs, n_max=20, seed=4))
    assert set(np.round(small[k, :, 1], 6)) <= set(np.round((v / obs.vcut).astype(
        np.float32), 6))
    mirror = member_arrays(dataclasses.replace(obs, v=-obs.v), n_max=20, seed=3)
    np.testing.assert_array_equal(mirror, small * np.float32([1, -1, 1]))  # mirrored subset
    # the cache: written once, read back, keyed by the settings
    fz = MemberListFeaturizer(n_max=20, seed=3)
    a = fz.transform(obs, cache_dir=tmp_path)
    files = list(tmp_path.glob("members_*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(fz.transform(obs, cache_dir=tmp_path), a)
    np.testing.assert_array_equal(a, small)
    MemberListFeaturizer(n_max=21, seed=3).transform(obs, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("members_*.npy"))) == 2
    with pytest.raises(InputError):
        MemberListFeaturizer(n_max=0)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_torchrun_two_processes_gloo(tmp_path):
    """``dynmass train --model deepset`` under torchrun with 2 gloo processes: one complete run
    folder from rank 0, predictions those of the saved fold models (each rank cuts its own
    batches to their largest view, so the ranks' input widths differ)."""
    import json
    import os
    import subprocess
    import sys

    from dynmass.observations import write_observations

    obs = evrard_views(24, 2, seed=0)
    obs_path = write_observations(obs, tmp_path / "obs.h5")
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "dynmass.cli", "train", str(obs_path), "--model", "deepset", "-o",
           str(run), "--folds", "2", "--epochs", "2", "--device", "cpu", "--no-progress",
           "--set", "phi_hidden=[16,16]", "--set", "rho_hidden=[16]"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run written to") == 1, "only rank 0 reports and writes"
    assert json.loads((run / "settings.json").read_text())["world_size"] == 2
    models = [load_model(run / f"fold_{f:02d}.h5") for f in range(2)]
    assert all(m.extra["world_size"] == 2 for m in models)
    pred = np.genfromtxt(run / "predictions.csv", delimiter=",", names=True)
    assert len(pred) == obs.n_views and np.isfinite(pred["log10_m200c_pred"]).all()
    index = {(int(h), int(los)): i for i, (h, los) in enumerate(
        zip(obs.clusters["halo_id"], obs.clusters["los"], strict=True))}
    for f, m in enumerate(models):
        rows = pred[pred["fold"] == f]
        idx = np.array([index[(int(r["halo_id"]), int(r["los"]))] for r in rows])
        np.testing.assert_allclose(m.predict(obs.subset(idx)), rows["log10_m200c_pred"],
                                   atol=1e-5)
