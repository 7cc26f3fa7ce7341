"""Figure of the benchmark results (``benchmarks/results.png``), one panel per question."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _num(d: dict, key: str) -> float | None:
    v = d.get(key)
    return float(v) if isinstance(v, (int, float)) else None


def _universe(ax, b: dict) -> None:
    u = b.get("universe", {})
    pts = []
    for key, val in u.items():
        m = re.fullmatch(r"box(\d+)_build_(?:s|seconds)", key)
        if m:
            pts.append((float(m.group(1)), float(val)))
    if _num(u, "default_build_seconds") is not None:
        pts.append((400.0, _num(u, "default_build_seconds")))
    pts.sort()
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="M200c > 10^11.5 Msun/h")
    gpc = _num(u, "gpc_build_seconds")
    if gpc is not None:
        mm = _num(u, "gpc_min_mass_msunh") or 0
        ax.plot([1000.0], [gpc], "s", color="C3", label=f"1 Gpc/h, M200c > {mm:.0e} Msun/h")
    ax.set_xlabel("box side [comoving Mpc/h]")
    ax.set_ylabel("build + write time [s]")
    ax.set_title("universe: build time vs box size")
    ax.legend(fontsize=8)


def _bars(ax, items: list[tuple[str, float | None]], title: str, ylabel: str, log: bool = True):
    items = [(k, v) for k, v in items if v is not None]
    if not items:
        ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
    else:
        ax.bar(range(len(items)), [v for _, v in items], color=[f"C{i}" for i in range(len(items))])
        ax.set_xticks(range(len(items)), [k for k, _ in items], rotation=25, ha="right", fontsize=8)
        for i, (_, v) in enumerate(items):
            ax.annotate(f"{v:,.0f}" if v >= 10 else f"{v:.2g}", (i, v), ha="center",
                        va="bottom", fontsize=7)
        if log:
            ax.set_yscale("log")
    ax.set_title(title)
    ax.set_ylabel(ylabel)


def _sdm_vs_cnn(ax, b: dict) -> None:
    s = b.get("sdm", {})
    for name, style in (("sdm", "o-"), ("cnn1d", "s-"), ("cnn2d", "^-")):
        pts = sorted((int(m.group(1)), float(v)) for k, v in s.items()
                     if (m := re.fullmatch(rf"{name}_train_predict_s_(\d+)", k)))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training views")
    ax.set_ylabel("train + predict wall time [s]")
    ax.set_title("SDM vs CNNs on the same data")
    ax.legend(fontsize=8)


def make_figure(results: dict, path: str | Path) -> Path:
    """Draw all panels into one PNG; returns its path."""
    b = results.get("benchmarks", {})
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    _universe(axes[0, 0], b)
    o = b.get("observe", {})
    _bars(axes[0, 1], [("serial (axes)", _num(o, "observe_views_per_s_serial")),
                       ("serial (rotated)", _num(o, "observe_rotated_views_per_s_serial")),
                       ("centre=members", _num(o, "observe_views_per_s_center_members")),
                       ("Dask 2 workers", _num(o, "observe_views_per_s_dask_2workers"))],
          "observe throughput", "cluster views / s")
    p, f = b.get("predict", {}), b.get("features", {})
    _bars(axes[0, 2], [("kde1d", _num(p, "kde1d_views_per_s") or _num(f, "kde1d_views_per_s")),
                       ("kde2d", _num(p, "kde2d_views_per_s") or _num(f, "kde2d_views_per_s")),
                       ("cnn1d pred.+KDE", _num(p, "cnn1d_predict_views_per_s_with_features")),
                       ("cnn2d pred.+KDE", _num(p, "cnn2d_predict_views_per_s_with_features")),
                       ("cnn2d net only", _num(p, "cnn2d_predict_views_per_s_network_only"))],
          "inputs and prediction throughput", "cluster views / s")
    t = b.get("train", {})
    epochs = [(k.replace("_epoch_seconds", "").replace("_views", "v"), float(v))
              for k, v in t.items() if "epoch_seconds" in k and isinstance(v, (int, float))]
    _bars(axes[1, 0], epochs, "training time per epoch", "seconds / epoch", log=False)
    _sdm_vs_cnn(axes[1, 1], b)
    _bars(axes[1, 2], [(k, _num(v, "peak_rss_mb")) for k, v in b.items()],
          "peak memory per benchmark process", "peak RSS [MiB]", log=False)
    m = results.get("machine", {})
    fig.suptitle(f"dynmass benchmarks on {m.get('cpu_model', m.get('processor', '?'))}, "
                 f"{m.get('cpu_count')} cores, torch {m.get('torch')} "
                 f"({'quick' if results.get('quick') else 'full'} run, "
                 f"{results.get('started_utc', '')})", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
