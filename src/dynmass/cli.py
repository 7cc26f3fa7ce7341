"""The ``dynmass`` command. Thin: parses arguments, calls the API, prints.

Each subcommand lives in a module of :mod:`dynmass._cli` that defines
``register(subparsers) -> None``; the parser it adds sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from dynmass import __version__
from dynmass._io import recorded_command
from dynmass.errors import DynmassError

#: Order in which subcommands are listed in ``dynmass --help`` (others follow alphabetically).
_ORDER = ("universe", "observe", "train", "predict_mock", "evaluate", "reproduce", "predict",
          "check")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="dynmass",
        description="Dynamical masses of galaxy clusters from member-galaxy kinematics "
        "(Ho et al. 2019 CNNs, M-sigma and SDM baselines).",
    )
    parser.add_argument("--version", action="version", version=f"dynmass {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    import dynmass._cli as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    names.sort(key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))
    for name in names:
        importlib.import_module(f"dynmass._cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dynmass`` command; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    try:
        with recorded_command(["dynmass", *argv]):  # the command every output records
            return int(args.func(args) or 0)
    except DynmassError as exc:
        print(f"dynmass {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dynmass {args.command}: interrupted; no partial output was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
