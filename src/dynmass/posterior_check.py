"""Fit a bundle's flow posterior (:mod:`dynmass.posterior`) and check it on independent views.

:func:`posterior_check` is ``dynmass posterior``: the flow is trained on the fold-ensemble
predictions of calibration views (independent universes, with the belts' E(z) handling), and
checked on test views of further universes against the bundle's own Neyman-belt intervals on
the same views: 68%/95% coverage overall and per 0.2-dex bin of true and of predicted mass,
SBC rank histogram and TARP. Views are judged within the bundle's calibrated mass range, as
:mod:`dynmass.coverage` does. With ``survey_inputs`` the flow is survey-aware
(:mod:`dynmass.survey_inputs`: each view's drawn survey is its declared survey) and the check
adds, per bin of targeting rate, the median and scatter of ``p50 - true`` over 10^14-10^15
Msun/h and the coverage of the flow and of the belts (the dynamics-only intervals). A flow
trained with an occupation uncertainty (``occupation_dex``) is judged on the test views drawn
over that uncertainty (:func:`occupation_offset`), and reported on their own occupation too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import atomic_write_json, file_sha256, provenance
from dynmass.bundle import Bundle
from dynmass.calibration_views import ensemble_calibration
from dynmass.observations import read_independent_views, read_observations, universes_of
from dynmass.posterior import Posterior, fit_posterior
from dynmass.redshift import views_correction_dex
from dynmass.survey_inputs import survey_of_views, survey_ranges

__all__ = ["evaluate_posterior", "occupation_offset", "posterior_check"]

#: Issue 14's target for posterior coverage: within +/- 2 points of 68% and 95%.
TOLERANCE = 0.02

#: Bins of the targeting rate (``survey_sampling_rate``) in which a survey-aware check scores.
RATE_EDGES = (0.05, 0.1, 0.25, 0.5, 1.0)


def _test_views(bundle: Bundle, paths: Sequence[str | os.PathLike], used: set[str],
                survey_inputs: Sequence[str] = ()) -> dict[str, np.ndarray]:
    cols: dict[str, list[np.ndarray]] = {}
    for path in paths:
        obs = read_independent_views(path, bundle.obs_settings, used, "a posterior check")
        for k, v in survey_of_views(obs, survey_inputs).items():
            cols.setdefault(f"survey:{k}", []).append(v)
        d_z = views_correction_dex(obs.settings, bundle.obs_settings)
        res = bundle.predict(obs)
        belt = np.column_stack([res[f"log10_m200c_{p}"] for p in ("p2_5", "p16", "p50", "p84",
                                                                   "p97_5")]) + d_z
        for key, arr in (("mu", res["log10_m200c_mean"]), ("n_gal", obs.n_gal),
                         ("true", obs.log10_m200c()), ("shift", np.full(obs.n_views, d_z)),
                         ("redshift", np.full(obs.n_views, float(obs.settings["redshift"]))),
                         ("belt", belt)):
            cols.setdefault(key, []).append(np.asarray(arr, float))
    return {k: np.concatenate(v) for k, v in cols.items()}


def _belt_scores(q: np.ndarray, true: np.ndarray, edges: np.ndarray) -> dict[str, Any]:
    in68 = (q[:, 1] <= true) & (true <= q[:, 3])
    in95 = (q[:, 0] <= true) & (true <= q[:, 4])

    def bins(x: np.ndarray) -> list[dict[str, float]]:
        idx = np.digitize(x, edges) - 1
        return [{"lo": float(edges[i]), "n": int((idx == i).sum()),
                 "coverage_68": float(in68[idx == i].mean()),
                 "coverage_95": float(in95[idx == i].mean())}
                for i in range(len(edges) - 1) if (idx == i).sum() >= 30]

    return {"coverage_68": float(in68.mean()), "coverage_95": float(in95.mean()),
            "bins_true": bins(true), "bins_pred": bins(q[:, 2])}


def _worst(bins: list[dict[str, float]]) -> tuple[float, float]:
    if not bins:
        return (float("nan"), float("nan"))
    return (max(abs(b["coverage_68"] - 0.68) for b in bins),
            max(abs(b["coverage_95"] - 0.95) for b in bins))


def occupation_offset(n_gal: np.ndarray, occupation_dex: float, seed: int) -> np.ndarray:
    """``n_gal`` times ``10**d``, ``d ~ Normal(0, occupation_dex)`` (seeded; at least 1): views
    of a sky whose occupation is drawn from a posterior's declared uncertainty
    (:class:`~dynmass.posterior.PosteriorSettings` ``occupation_dex``).

    Parameters
    ----------
    n_gal : numpy.ndarray
        Galaxies in each view's cylinder.
    occupation_dex : float
        Standard deviation of the offset of log10 N [dex].
    seed : int
        Seed of the offsets.

    Returns
    -------
    numpy.ndarray
        The offset numbers of galaxies (floats, at least 1).

    Examples
    --------
    >>> import numpy as np
    >>> n = occupation_offset(np.full(20000, 100.0), 0.3, seed=1)
    >>> round(float(np.std(np.log10(n))), 2)
    0.3
    """
    d = np.random.default_rng(seed).normal(0.0, occupation_dex, len(n_gal))
    return np.maximum(np.asarray(n_gal, float) * 10.0 ** d, 1.0)


def _survey(paths: Sequence[str | os.PathLike], names: Sequence[str]
            ) -> tuple[dict[str, np.ndarray], dict[str, tuple[float, float]]]:
    """Per-view survey values of the calibration files, and the ranges they were drawn from."""
    obs = [read_observations(p) for p in paths]
    parts = [survey_of_views(o, names) for o in obs]
    return ({k: np.concatenate([q[k] for q in parts]) for k in names},
            survey_ranges([o.settings for o in obs], names))


def _rate_scores(q: np.ndarray, belt: np.ndarray, true: np.ndarray, rate: np.ndarray
                 ) -> list[dict[str, Any]]:
    """Per bin of targeting rate, views of 10^14-10^15 Msun/h: bias, scatter, coverage."""
    out = []
    for lo, hi in zip(RATE_EDGES[:-1], RATE_EDGES[1:], strict=True):
        m = (rate >= lo) & (rate < hi + (1e-9 if hi == RATE_EDGES[-1] else 0)) & \
            (true >= 14.0) & (true < 15.0)
        if m.sum() < 30:
            continue
        row: dict[str, Any] = {"rate_lo": lo, "rate_hi": hi, "n": int(m.sum())}
        for name, x in (("flow", q[m]), ("belts", belt[m])):
            d = x[:, 2] - true[m]
            row[name] = {"median": float(np.median(d)), "std": float(np.std(d)),
                         "coverage_68": float(np.mean((x[:, 1] <= true[m]) &
                                                      (true[m] <= x[:, 3]))),
                         "coverage_95": float(np.mean((x[:, 0] <= true[m]) &
                                                      (true[m] <= x[:, 4])))}
        out.append(row)
    return out


def posterior_check(bundle: Bundle, calibration: Sequence[str | os.PathLike],
                    test: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                    epochs: int = 60, seed: int = 0, n_flows: int = 1,
                    survey_inputs: Sequence[str] = (), occupation_dex: float = 0.0
                    ) -> dict[str, Any]:
    """Train the flow on ``calibration`` views, check it on ``test`` views, write the results.

    Parameters
    ----------
    bundle : Bundle
        Its fold models summarise each view; its calibrated range selects the judged views.
    calibration, test : sequence of path-like
        Observations files of distinct universes the bundle was not trained on.
    output : path-like
        Stem: writes ``.h5`` (the flow), ``.json`` (every number) and ``.png``.
    epochs, seed : int
        Flow training.
    n_flows : int
        Flows of the deep ensemble (:class:`~dynmass.posterior.PosteriorSettings`).
    survey_inputs : sequence of str
        Survey inputs of a survey-aware flow (:mod:`dynmass.survey_inputs`), read per view
        from the observations (none: the flow sees only ``mu`` and ``N``).
    occupation_dex : float
        Uncertainty [dex] of the galaxies per cylinder at fixed mass relative to the mocks'
        (:class:`~dynmass.posterior.PosteriorSettings`); the test views are scored as they are.

    Returns
    -------
    dict
        ``summary`` (coverage, worst bins, SBC p-value, TARP deviation for the flow and the
        bundle's belts; ``passed``: the flow's 68%/95% coverage within 2 points) and the full
        ``results``. With ``occupation_dex > 0`` the flow is also scored on the test views
        with their ``log10 N`` offset as in training (:func:`occupation_offset`),
        ``flow_over_occupation``: the coverage it claims, averaged over that uncertainty, and
        the one ``passed`` judges; ``flow`` (the test universes' own occupation, the centre of
        the uncertainty) then over-covers by construction.
    """
    output = Path(output)
    exclude = sorted(universes_of(bundle.obs_settings))
    cal, files = ensemble_calibration(bundle.models, calibration, bundle.obs_settings,
                                      exclude_universes=exclude, seed=seed)
    survey, ranges = _survey(calibration, survey_inputs) if survey_inputs else (None, None)
    post = fit_posterior(cal.pred, cal.n_gal, cal.true, cal.host, survey=survey,
                         survey_range=ranges, epochs=epochs, seed=seed, n_flows=n_flows,
                         occupation_dex=occupation_dex)
    post.meta = {"bundle": str(bundle.path) if bundle.path else None,
                 "bundle_sha256": file_sha256(bundle.path) if bundle.path else None,
                 "calibration_files": [str(p) for p in calibration]}
    post.save(output.with_suffix(".h5"))
    used = set(exclude) | {u for f in files for u in f.get("universes_sha256", [])}
    t = _test_views(bundle, test, used, post.settings.survey_inputs)
    t_survey = {k: t[f"survey:{k}"] for k in post.settings.survey_inputs}
    lo, hi = bundle.domain.get("log10_m200c_calibrated", [13.5, 15.1])
    keep = (t["true"] >= lo) & (t["true"] <= hi)
    edges = np.round(np.arange(13.5, hi + 1e-9, 0.2), 3)
    results: dict[str, Any] = {"n_calibration_views": int(len(cal.pred)),
                               "calibration_files": files, "history": post.history}
    summary: dict[str, Any] = {"n_test_views": int(keep.sum()), "calibrated_range": [lo, hi]}
    r = evaluate_posterior(post, t["mu"][keep], t["n_gal"][keep], t["true"][keep],
                           shift=t["shift"][keep], seed=seed, edges=edges,
                           survey={k: v[keep] for k, v in t_survey.items()} or None)
    q = r.pop("quantiles")
    results["flow"] = r
    occ = float(post.settings.occupation_dex)
    if occ > 0:  # the calibration check proper: test views' log10 N offset as in training
        r_occ = evaluate_posterior(post, t["mu"][keep], occupation_offset(
            t["n_gal"][keep], occ, seed), t["true"][keep], shift=t["shift"][keep], seed=seed,
            edges=edges, survey={k: v[keep] for k, v in t_survey.items()} or None)
        r_occ.pop("quantiles")
        results["flow_over_occupation"] = r_occ
    results["survey_inputs"] = list(post.settings.survey_inputs)
    if "sampling_rate" in t_survey:
        results["by_rate"] = _rate_scores(q, t["belt"][keep], t["true"][keep],
                                          t_survey["sampling_rate"][keep])
        summary["by_rate"] = results["by_rate"]
    for name in ("flow", "flow_over_occupation"):
        if name in results:
            x = results[name]
            summary[name] = {"coverage_68": x["coverage_68"], "coverage_95": x["coverage_95"],
                             "worst_bin_true_dev": _worst(x["bins_true"]),
                             "worst_bin_pred_dev": _worst(x["bins_pred"]),
                             "sbc_p_value": x["sbc_p_value"], "tarp_max_dev": x["tarp_max_dev"],
                             "median_bias": x["median_bias"]}
    # judged where the flow claims calibration: over its declared occupation uncertainty
    judged = results.get("flow_over_occupation", r)
    summary["occupation_dex"] = occ
    passed = (abs(judged["coverage_68"] - 0.68) <= TOLERANCE and
              abs(judged["coverage_95"] - 0.95) <= TOLERANCE)
    b = _belt_scores(t["belt"][keep], t["true"][keep], edges)
    results["belts"] = b
    summary["belts"] = {"coverage_68": b["coverage_68"], "coverage_95": b["coverage_95"],
                        "worst_bin_true_dev": _worst(b["bins_true"]),
                        "worst_bin_pred_dev": _worst(b["bins_pred"])}
    summary["passed"] = bool(passed)
    atomic_write_json(output.with_suffix(".json"), {"summary": summary, "results": results,
                                                    "provenance": provenance()})
    _figure(results, output.with_suffix(".png"))
    return {"summary": summary, "results": results}


def _figure(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_rate = results.get("by_rate") or []
    fig, ax = plt.subplots(1, 5 if by_rate else 4, figsize=(21 if by_rate else 17, 4))
    for name, col in (("flow", "C0"), ("flow_over_occupation", "C1")):
        if name not in results:
            continue
        r = results[name]
        ax[0].step(np.linspace(0, 1, 21)[:-1], np.asarray(r["sbc_hist"]) / sum(r["sbc_hist"]),
                   where="post", color=col, label=name)
        ax[1].plot(r["tarp_alpha"], r["tarp_ecp"], color=col, label=name)
    ax[0].axhline(1 / 20, color="0.5", ls="--")
    ax[0].set(xlabel="rank of the true mass (posterior CDF)", ylabel="fraction", title="SBC")
    ax[1].plot([0, 1], [0, 1], color="0.5", ls="--")
    ax[1].set(xlabel="credibility level", ylabel="expected coverage", title="TARP")
    for k, key in ((2, "bins_true"), (3, "bins_pred")):
        for name, col in (("flow", "C0"), ("flow_over_occupation", "C1"), ("belts", "C2")):
            if name not in results:
                continue
            bins = results[name][key]
            x = [b["lo"] + 0.1 for b in bins]
            ax[k].plot(x, [b["coverage_68"] for b in bins], "o-", color=col, label=f"{name} 68%")
            ax[k].plot(x, [b["coverage_95"] for b in bins], "s--", color=col, mfc="none",
                       label=f"{name} 95%")
        ax[k].axhspan(0.66, 0.70, color="0.85")
        ax[k].axhspan(0.93, 0.97, color="0.85")
        ax[k].set(xlabel=f"log10 M200c ({'true' if k == 2 else 'predicted'}) [Msun/h]",
                  ylabel="coverage", title=f"coverage per bin of {key[5:]} mass")
    if by_rate:
        x = [np.sqrt(b["rate_lo"] * b["rate_hi"]) for b in by_rate]
        for name, col in (("flow", "C0"), ("belts", "C2")):
            ax[4].plot(x, [b[name]["std"] for b in by_rate], "o-", color=col,
                       label=f"{name}: scatter")
            ax[4].plot(x, [b[name]["median"] for b in by_rate], "s:", color=col, mfc="none",
                       label=f"{name}: median")
        ax[4].axhline(0, color="0.5", lw=0.8)
        ax[4].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax[4].set(xscale="log", xlabel="targeting rate", ylabel="p50 - true [dex]",
                  title="10^14-10^15 Msun/h, by targeting rate")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_posterior(post: Posterior, mu: np.ndarray, n_gal: np.ndarray, true: np.ndarray,
                       *, shift: np.ndarray | float = 0.0, seed: int = 0, n_samples: int = 200,
                       edges: np.ndarray | None = None,
                       survey: dict[str, Any] | None = None) -> dict[str, Any]:
    """Coverage, SBC ranks and TARP of the posterior on independent views.

    Parameters
    ----------
    post : Posterior
    mu, n_gal, true : numpy.ndarray
        Ensemble means, galaxies per cylinder, true log10 M200c [Msun/h] of test views.
    shift : float or numpy.ndarray
        Added to every posterior value (the E(z) term of views at another redshift).
    seed : int
        Seed of the TARP samples and reference points.
    n_samples : int
        Posterior samples per view for TARP.
    edges : numpy.ndarray, optional
        Bin edges of true and predicted mass (default 0.2 dex over 13.5-15.1).
    survey : dict, optional
        The test views' survey inputs (a survey-aware posterior).

    Returns
    -------
    dict
        ``coverage_68``, ``coverage_95``, ``bins_true`` / ``bins_pred`` (coverage per bin),
        ``sbc_hist`` (20 bins), ``sbc_chi2``, ``sbc_p_value``, ``tarp_alpha``, ``tarp_ecp``,
        ``tarp_max_dev``, ``median_bias``, ``n_views``.
    """
    from scipy.stats import chi2

    true = np.asarray(true, float)
    shift = np.broadcast_to(np.asarray(shift, float), true.shape)
    cdf = post.cdf(mu, n_gal, survey)
    g = post.grid
    rank = np.array([np.interp(t - d, g, row) for t, d, row in zip(true, shift, cdf,
                                                                      strict=True)])
    q = np.column_stack([[np.interp(p, row, g) for row in cdf]
                         for p in (0.025, 0.16, 0.5, 0.84, 0.975)]) + shift[:, None]
    in68 = (q[:, 1] <= true) & (true <= q[:, 3])
    in95 = (q[:, 0] <= true) & (true <= q[:, 4])
    edges = np.round(np.arange(13.5, 15.11, 0.2), 3) if edges is None else edges

    def bins(x: np.ndarray) -> list[dict[str, float]]:
        idx = np.digitize(x, edges) - 1
        return [{"lo": float(edges[i]), "n": int((idx == i).sum()),
                 "coverage_68": float(in68[idx == i].mean()),
                 "coverage_95": float(in95[idx == i].mean()),
                 "median_bias": float(np.median(q[idx == i, 2] - true[idx == i]))}
                for i in range(len(edges) - 1) if (idx == i).sum() >= 30]

    hist, _ = np.histogram(rank, bins=20, range=(0, 1))
    expect = len(rank) / 20
    c2 = float(np.sum((hist - expect) ** 2 / expect))
    # TARP: samples by inverse CDF; reference points uniform over the tested mass range
    rng = np.random.default_rng(seed)
    u = rng.random((len(true), n_samples))
    samples = np.stack([np.interp(uu, row, g) for uu, row in zip(u, cdf, strict=True)])
    samples = samples + shift[:, None]
    ref = rng.uniform(true.min(), true.max(), len(true))
    f = np.mean(np.abs(samples - ref[:, None]) < np.abs(true - ref)[:, None], axis=1)
    alpha = np.linspace(0, 1, 51)
    ecp = np.array([np.mean(f < a) for a in alpha])
    return {"n_views": int(len(true)), "coverage_68": float(in68.mean()),
            "coverage_95": float(in95.mean()), "median_bias": float(np.median(q[:, 2] - true)),
            "bins_true": bins(true), "bins_pred": bins(q[:, 2]), "sbc_hist": hist.tolist(),
            "sbc_chi2": c2, "sbc_p_value": float(chi2.sf(c2, 19)),
            "tarp_alpha": alpha.tolist(), "tarp_ecp": ecp.tolist(),
            "tarp_max_dev": float(np.max(np.abs(ecp - alpha))), "quantiles": q}
