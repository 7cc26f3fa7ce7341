"""``dynmass --version`` and the settings record (version + command) in every output file.

A tiny pipeline is run through the CLI entry point (``dynmass.cli.main``): universe (mock and
``--from`` a table), observe, train (cross-validation and ``--all``), predict-mock, bundle
(with ``--coverage``), predict and evaluate. Every file it writes must say which dynmass
version and which command made it, so any number in a report can be traced back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import h5py
import numpy as np
import pytest

import dynmass
from dynmass.cli import main


def test_version_flag(capsys):
    assert dynmass.__version__ == version("dynmass")
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"dynmass {dynmass.__version__}"
    out = subprocess.run([sys.executable, "-m", "dynmass.cli", "--version"], check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == f"dynmass {dynmass.__version__}"


def _h5_record(path: Path, group: str = "/") -> tuple[str, str]:
    with h5py.File(path, "r") as fh:
        g = fh[group]
        return str(g.attrs["dynmass_version"]), json.loads(g.attrs["provenance"])["command"]


def _check(record: tuple[str, str], subcommand: str, output: Path) -> None:
    ver, command = record
    assert ver == dynmass.__version__
    assert command.startswith(f"dynmass {subcommand} "), command
    assert str(output) in command, command


def _members_csv(path: Path) -> Path:
    """One cluster of sky members near (150, 2) deg at z = 0.117."""
    rng = np.random.default_rng(4)
    ra, dec = 150 + rng.normal(0, 0.04, 30), 2 + rng.normal(0, 0.04, 30)
    z = 0.117 + rng.normal(0, 0.002, 30)
    rows = [f"{float(a)!r},{float(b)!r},{float(c)!r}" for a, b, c in zip(ra, dec, z, strict=True)]
    path.write_text("ra,dec,z\n" + "\n".join(rows) + "\n")
    return path


def test_every_output_records_version_and_command(tmp_path, capsys):
    t = tmp_path
    # universe: the mock, and a conversion of a generic table (write_catalog)
    u = t / "u.h5"
    assert main(["universe", "-o", str(u), "--box", "50", "--min-mass", "1e12",
                 "--seed", "5"]) == 0
    _check(_h5_record(u), "universe", u)
    with h5py.File(u, "r") as fh, h5py.File(t / "table.h5", "w") as out:
        for grp in ("halos", "galaxies"):
            for col in fh[grp]:
                out.create_dataset(f"{grp}/{col}", data=fh[grp][col][...])
    conv = t / "converted.h5"
    assert main(["universe", "--from", str(t / "table.h5"), "--format", "table", "--box", "50",
                 "--redshift", "0.117", "-o", str(conv)]) == 0
    _check(_h5_record(conv), "universe", conv)
    # observe
    obs = t / "obs.h5"
    assert main(["observe", str(u), "-o", str(obs), "--min-mass", "1e13",
                 "--min-members", "3"]) == 0
    _check(_h5_record(obs), "observe", obs)
    # train: run folder (settings.json, fold models) and one model on all views
    run = t / "run"
    assert main(["train", str(obs), "--model", "msigma", "-o", str(run), "--folds", "2",
                 "--no-progress"]) == 0
    settings = json.loads((run / "settings.json").read_text())
    _check((settings["dynmass_version"], settings["command"]), "train", run)
    _check(_h5_record(run / "fold_00.h5"), "train", run)
    model = t / "all.h5"
    assert main(["train", str(obs), "--model", "msigma", "-o", str(model), "--all",
                 "--no-progress"]) == 0
    _check(_h5_record(model), "train", model)
    # predict-mock: CSV with a settings sidecar
    pm = t / "pm.csv"
    assert main(["predict-mock", str(run), str(obs), "-o", str(pm)]) == 0
    side = json.loads((t / "pm.settings.json").read_text())
    _check((side["dynmass_version"], side["command"]), "predict-mock", pm)
    # bundle (and its coverage check)
    bundle = t / "bundle.h5"
    assert main(["bundle", str(run), "-o", str(bundle), "--coverage", "--min-hosts", "5"]) in (0, 1)
    _check(_h5_record(bundle), "bundle", bundle)
    _check(_h5_record(bundle, "folds/fold_00"), "bundle", bundle)
    cov = json.loads((t / "bundle_coverage.json").read_text())["provenance"]
    _check((cov["dynmass_version"], cov["command"]), "bundle", bundle)
    # predict: masses.csv and its sidecar
    masses = t / "masses.csv"
    assert main(["predict", str(_members_csv(t / "members.csv")), "--model", str(bundle),
                 "-o", str(masses)]) in (0, 1)
    side = json.loads((t / "masses.settings.json").read_text())
    _check((side["dynmass_version"], side["command"]), "predict", masses)
    # evaluate: metrics.json
    rep = t / "report"
    assert main(["evaluate", str(run), "-o", str(rep), "--no-sampling-test", "--no-figures",
                 "--n-boot", "10"]) == 0
    prov = json.loads((rep / "metrics.json").read_text())["provenance"]
    _check((prov["dynmass_version"], prov["command"]), "evaluate", rep)
    capsys.readouterr()


def test_python_api_records_the_python_command(tmp_path):
    """Outside the CLI the record is the running program's command line (sys.argv)."""
    from dynmass._io import provenance, recorded_command

    assert provenance()["command"] == " ".join(sys.argv)
    with recorded_command(["dynmass", "observe", "a b.h5"]):
        assert provenance()["command"] == "dynmass observe 'a b.h5'"
    assert provenance()["command"] == " ".join(sys.argv)


def test_every_help_page_renders(capsys):
    """``dynmass --help`` and each subcommand's ``--help`` print and exit 0 (argparse
    %-formats help strings, so a bare '%' in one of them breaks the top-level page)."""
    from dynmass.cli import build_parser

    parser = build_parser()
    commands = [a for a in parser._subparsers._group_actions[0].choices]  # noqa: SLF001
    assert "predict" in commands and "coverage" in commands
    for argv in [["--help"]] + [[c, "--help"] for c in commands]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0, argv
        out = capsys.readouterr().out
        assert "usage: dynmass" in out, argv
        # descriptions are not %-formatted (help strings are): a '%%' there prints as is
        assert "%%" not in out, argv
