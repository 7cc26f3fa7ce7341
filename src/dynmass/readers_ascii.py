"""Whitespace ASCII halo catalogs with ``#`` headers, and the snapshot metadata of a catalog file.

Shared by the UniverseMachine (:mod:`~dynmass.readers_um`) and Rockstar / consistent-trees
``hlist`` (:mod:`~dynmass.readers_hlist`) readers:

* :func:`_read_ascii`: named columns of a file whose first ``#`` line names the columns
  (``(n)`` suffixes dropped, names matched case-insensitively);
* :func:`_header_meta`: the scale factor ``a =``, ``Omega_M``/``Om`` and ``h0``/``h`` and the
  ``box size`` (comoving Mpc/h) that headers state;
* :func:`_resolve_meta`: box size, redshift and cosmology from the caller's arguments, else the
  header, else (redshift) the scale factor in the file name ``..._<a>.txt``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dynmass.cosmology import MDPL2, validate_cosmology
from dynmass.errors import InputError
from dynmass.readers_columns import _check_exists


def _redshift_from_name(path: Path) -> float | None:
    m = re.search(r"_(\d+\.\d+)\.(?:txt|bin|list|dat)$", path.name)
    if m:
        a = float(m.group(1))
        if 0 < a <= 1.5:
            return 1.0 / a - 1.0
    return None


def _parse_header_columns(line: str, path: Path) -> list[str]:
    tokens = line.lstrip("#").split()
    if not tokens:
        raise InputError("the first '#' header line names no columns (foreign file?)", path=path)
    return [re.sub(r"\(\d+\)$", "", t) for t in tokens]


def _read_ascii(path: Path, wanted: dict[str, str], comment: str = "#"
                ) -> tuple[dict, list[str], dict]:
    """Read named columns of a whitespace ASCII file whose first line names the columns.

    Returns the columns (by dynmass key), the header comment lines and the name->index map.
    """
    _check_exists(path)
    header: list[str] = []
    with open(path, errors="replace") as fh:
        for line in fh:
            if not line.startswith(comment):
                break
            header.append(line.rstrip("\n"))
    if not header:
        raise InputError("no '#' header line naming the columns (foreign file?)", path=path)
    names = _parse_header_columns(header[0], path)
    index = {n.lower(): i for i, n in enumerate(names)}
    use = {}
    for key, col in wanted.items():
        if col.lower() not in index:
            raise InputError(f"required column is missing from the header ({len(names)} columns: "
                             f"{' '.join(names[:12])}{' ...' if len(names) > 12 else ''})",
                             path=path, column=col)
        use[key] = index[col.lower()]
    cols = sorted(set(use.values()))
    try:
        data = np.loadtxt(path, comments=comment, usecols=cols, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"unreadable rows (truncated or foreign file?): {exc}", path=path) from exc
    if data.shape[0] == 0:
        raise InputError("no data rows", path=path)
    pos = {c: j for j, c in enumerate(cols)}
    out = {key: data[:, pos[i]] for key, i in use.items()}
    return out, header, index


def _header_value(header: list[str], patterns: list[str]) -> float | None:
    for line in header:
        for pat in patterns:
            m = re.search(pat, line, flags=re.IGNORECASE)
            if m:
                return float(m.group(1))
    return None


_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def _header_meta(header: list[str]) -> dict[str, float | None]:
    return {
        "a": _header_value(header, [rf"^#\s*a\s*=\s*{_NUM}"]),
        "Om0": _header_value(header, [rf"Omega_M\s*=\s*{_NUM}", rf"\bOm\s*=\s*{_NUM}"]),
        "h": _header_value(header, [rf"\bh0\s*=\s*{_NUM}", rf"\bh\s*=\s*{_NUM}"]),
        "box": _header_value(header, [rf"box\s*size\s*[:=]\s*{_NUM}"]),
    }


def _resolve_meta(path, meta, box_size, redshift, cosmology) -> tuple[float, float, dict]:
    cosmo = dict(cosmology) if cosmology is not None else dict(MDPL2)
    if cosmology is None and meta.get("Om0") and meta.get("h"):
        cosmo.update(name="from header", Om0=meta["Om0"], H0=100.0 * meta["h"])
    cosmo = validate_cosmology(cosmo, path)
    if redshift is None:
        if meta.get("a"):
            redshift = 1.0 / meta["a"] - 1.0
        else:
            redshift = _redshift_from_name(path)
    if redshift is None:
        raise InputError("redshift unknown: not in the header or file name; pass redshift= "
                         "(--redshift)", path=path)
    box = box_size if box_size is not None else meta.get("box")
    if box is None:
        raise InputError("box size unknown: not in the header; pass box_size= (--box)", path=path)
    return float(box), float(max(redshift, 0.0)), cosmo
