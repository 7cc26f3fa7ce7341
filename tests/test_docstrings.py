"""The docs stay honest: parameters documented, stage modules with examples, no outside refs.

* Every public function, public class and public method of a public class defined in a module
  of :mod:`dynmass` (counted once, in the module that defines it) that takes two or more
  parameters besides ``self`` / ``cls`` has a numpydoc ``Parameters`` section naming each of
  them. A class may document its ``__init__`` parameters in the class docstring or in
  ``__init__``'s; a dataclass may document its fields under ``Parameters`` or ``Attributes``.
  The ``register`` / ``run`` functions of the CLI modules (:mod:`dynmass._cli`) are exempt.
* Every pipeline-stage module has at least one doctest example.
* No docstring or comment under ``src/`` points at a file outside the repository.

``numpydoc`` is not a dependency, so :func:`documented_parameters` parses the ``Parameters``
section itself, following numpydoc's rules (a header line, a line of dashes, entries
``name : type`` / ``name1, name2 : type`` / ``*args`` at the section's indent).
"""

from __future__ import annotations

import ast
import dataclasses
import doctest
import importlib
import inspect
import io
import pkgutil
import re
import sys
import tokenize
import types
from pathlib import Path

import pytest

import dynmass

SRC = Path(dynmass.__file__).resolve().parent

#: The modules of the pipeline stages; each shows its use in a runnable example.
STAGE_MODULES = (
    "dynmass.universe.build",
    "dynmass.observe",
    "dynmass.features",
    "dynmass.train",
    "dynmass.evaluate",
    "dynmass.bundle",
    "dynmass.predict",
    "dynmass.report",
)

#: Functions of the CLI modules whose arguments are argparse objects, not documented.
CLI_EXEMPT = frozenset({"register", "run"})

#: numpydoc sections that document parameters.
PARAMETER_SECTIONS = ("Parameters", "Other Parameters")

_HEADER_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _section_entries(doc: str, section: str) -> list[str] | None:
    """Header lines of the entries of a numpydoc section of ``doc``; None if there is none.

    Parameters
    ----------
    doc : str
        The docstring (raw or cleaned).
    section : str
        The section's title, e.g. ``"Parameters"``.
    """
    lines = inspect.cleandoc(doc).splitlines()
    found = None
    for i in range(len(lines) - 1):
        if lines[i].strip() == section and _HEADER_UNDERLINE.match(lines[i + 1]):
            found = i
            break
    if found is None:
        return None
    indent = _indent(lines[found])
    entries = []
    for j in range(found + 2, len(lines)):
        line = lines[j]
        if not line.strip():
            continue
        if _indent(line) < indent:
            break
        if _indent(line) > indent:
            continue  # an entry's description
        if j + 1 < len(lines) and _HEADER_UNDERLINE.match(lines[j + 1]):
            break  # the next section's header
        entries.append(line.strip())
    return entries


def documented_parameters(doc: str | None, sections: tuple[str, ...] = PARAMETER_SECTIONS) -> (
        set[str] | None):
    """Names documented in the given numpydoc sections of ``doc``, leading ``*`` (``\\*``) removed.

    Returns None when ``doc`` has none of the sections.

    Parameters
    ----------
    doc : str or None
        The docstring.
    sections : tuple of str
        Section titles to read (``"Parameters"``; ``"Attributes"`` too for dataclass fields).

    Examples
    --------
    >>> sorted(documented_parameters('''Do it.
    ...
    ... Parameters
    ... ----------
    ... x, y : float
    ...     Coordinates, comoving Mpc/h.
    ... *args
    ...     Passed on.
    ... flag
    ...
    ... Returns
    ... -------
    ... z : float
    ... '''))
    ['args', 'flag', 'x', 'y']
    """
    if not doc:
        return None
    names: set[str] | None = None
    for section in sections:
        entries = _section_entries(doc, section)
        if entries is None:
            continue
        names = names or set()
        for entry in entries:
            head = entry.split(" : ", 1)[0] if " : " in entry else entry
            names.update(n.strip().lstrip("\\*") for n in head.split(",") if n.strip())
    return names


def _modules() -> tuple[list, list[str]]:
    """Every module of the package, and ``name: error`` for each that failed to import."""
    mods, failed = [dynmass], []
    # a package that fails to import fails in the loop first; onerror only stops the walk
    # from raising it a second time
    for info in pkgutil.walk_packages(dynmass.__path__, "dynmass.", onerror=lambda name: None):
        try:
            mods.append(importlib.import_module(info.name))
        except Exception as exc:  # noqa: BLE001 - reported with the other violations
            failed.append(f"{info.name}: import failed: {type(exc).__name__}: {exc}")
    return mods, failed


def _params(func, drop_first: bool) -> list[inspect.Parameter] | None:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature
        return None
    params = list(sig.parameters.values())
    return params[1:] if drop_first and params else params


def _missing(params: list[inspect.Parameter], documented: set[str] | None) -> list[str] | None:
    names = [p.name for p in params]
    if len(names) < 2:
        return None
    if documented is None:
        return names
    return [n for n in names if n not in documented] or None


def _method_targets(cls: type):
    """Public methods defined in ``cls`` itself: ``(name, function, drops first parameter)``."""
    for name, attr in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(attr, staticmethod):
            func, drop = attr.__func__, False
        elif isinstance(attr, classmethod):
            func, drop = attr.__func__, True
        elif inspect.isfunction(attr):
            func, drop = attr, True
        else:
            continue  # properties, constants, nested classes
        if getattr(func, "__qualname__", None) != f"{cls.__qualname__}.{name}":
            continue  # an alias of a function defined elsewhere: checked there
        yield name, func, drop


def _constructor(cls: type):
    """The ``__init__`` (or ``__new__``) written for ``cls`` itself, else None (inherited)."""
    for name in ("__init__", "__new__"):
        attr = vars(cls).get(name)
        if isinstance(attr, staticmethod):
            attr = attr.__func__
        if inspect.isfunction(attr) and attr.__qualname__ == f"{cls.__qualname__}.{name}":
            return attr
    return None


def _missing_text(qualname: str, params: list[inspect.Parameter] | None,
                  documented: set[str] | None) -> str | None:
    missing = params is not None and _missing(params, documented)
    return f"{qualname}: missing {', '.join(missing)}" if missing else None


def module_violations(mod) -> list[str]:
    """``module.qualname: missing a, b`` for each public callable defined in ``mod`` whose docs
    miss a parameter (callables with fewer than two parameters are not checked).

    Parameters
    ----------
    mod : module
        The module; objects whose ``__module__`` is another module's are checked there.
    """
    modname = mod.__name__
    is_cli = modname.startswith("dynmass._cli.")
    found: list[str | None] = []
    seen: set[int] = set()
    for name, obj in sorted(vars(mod).items()):
        if (name.startswith("_") or getattr(obj, "__module__", None) != modname
                or id(obj) in seen):
            continue
        seen.add(id(obj))  # an alias in the same module is checked once
        if inspect.isclass(obj):
            init = _constructor(obj)
            if init is not None:
                sections = ((*PARAMETER_SECTIONS, "Attributes") if dataclasses.is_dataclass(obj)
                            else PARAMETER_SECTIONS)
                documented = documented_parameters(vars(obj).get("__doc__"), sections)
                from_init = documented_parameters(init.__doc__)
                if from_init is not None:
                    documented = (documented or set()) | from_init
                found.append(_missing_text(f"{modname}.{obj.__qualname__}",
                                           _params(init, drop_first=True), documented))
            for _, func, drop in _method_targets(obj):
                found.append(_missing_text(f"{modname}.{func.__qualname__}",
                                           _params(func, drop_first=drop),
                                           documented_parameters(inspect.getdoc(func))))
        elif inspect.isfunction(inspect.unwrap(obj)):
            if is_cli and name in CLI_EXEMPT:
                continue
            found.append(_missing_text(f"{modname}.{obj.__qualname__}",
                                       _params(obj, drop_first=False),
                                       documented_parameters(obj.__doc__)))
    return [f for f in found if f]


def parameter_violations() -> list[str]:
    """:func:`module_violations` of every module of :mod:`dynmass`, and import failures."""
    mods, out = _modules()
    for mod in mods:
        out += module_violations(mod)
    return out


_SELF_TEST_SOURCE = '''
import dataclasses

def documented(a, b, *args, **kwargs):
    """Fine.

    Parameters
    ----------
    a, b : float
        Masses, log10 Msun/h.
    *args, **kwargs
        Passed on.
    """

def partly(a, b):
    """Half.

    Parameters
    ----------
    a : float

    Returns
    -------
    b : float
    """

def undocumented(x, y):
    """No sections."""

def single(x):
    """One parameter: not checked."""

alias = undocumented

class Thing:
    """Documents its constructor here.

    Parameters
    ----------
    r : float
        Radius, comoving Mpc/h.
    v : float
        Velocity, km/s.
    """

    def __init__(self, r, v):
        pass

    def method(self, p, q):
        """Only p.

        Parameters
        ----------
        p : float
        """

    @staticmethod
    def static(u, w):
        """Nothing."""

    @classmethod
    def build(cls, one):
        """One parameter besides cls."""

@dataclasses.dataclass
class Record:
    """Fields as attributes.

    Attributes
    ----------
    mass : float
        log10 Msun/h.
    """

    mass: float
    sigma: float
'''


def test_checker_finds_every_violation(monkeypatch):
    """The checker itself: all gaps of a made-up module, each once, and nothing else."""
    mod = types.ModuleType("made_up")
    monkeypatch.setitem(sys.modules, "made_up", mod)  # dataclasses look their module up
    exec(compile(_SELF_TEST_SOURCE, "made_up.py", "exec"), mod.__dict__)
    assert sorted(module_violations(mod)) == [
        "made_up.Record: missing sigma",
        "made_up.Thing.method: missing q",
        "made_up.Thing.static: missing u, w",
        "made_up.partly: missing b",
        "made_up.undocumented: missing x, y",
    ]


def test_public_parameters_documented():
    """Each public callable with 2+ parameters names all of them in a ``Parameters`` section."""
    violations = parameter_violations()
    assert not violations, (f"{len(violations)} public callables lack numpydoc Parameters "
                            "entries:\n" + "\n".join(violations))


@pytest.mark.parametrize("modname", STAGE_MODULES)
def test_stage_module_has_doctest_example(modname):
    """Each pipeline stage shows its use in at least one doctest example."""
    mod = importlib.import_module(modname)
    n = sum(len(t.examples) for t in doctest.DocTestFinder().find(mod))
    assert n >= 1, f"{modname} has no doctest example"


#: Pointers outside the repository: the design notes and sibling folders of the checkout.
OUTSIDE = re.compile(r"DESIGN\.md|\.\./|(?<![\w./-])shared/|/work/")


def _docs_and_comments(path: Path):
    """``(line, text)`` of every docstring, bare string statement and comment in ``path``."""
    source = path.read_text(encoding="utf-8")
    if not OUTSIDE.search(source):
        return  # nothing to find: skip parsing
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            yield node.lineno, node.value.value
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string


def outside_references(paths) -> list[str]:
    """``file:line: 'match'`` for each :data:`OUTSIDE` match in a docstring or comment.

    Parameters
    ----------
    paths : iterable of pathlib.Path
        Python source files.
    """
    return [f"{path}:{line}: {m.group(0)!r}"
            for path in paths
            for line, text in _docs_and_comments(path)
            for m in OUTSIDE.finditer(text)]


def test_no_references_outside_repository():
    """Docstrings and comments under src/ do not cite DESIGN.md or paths like ../shared."""
    hits = outside_references(sorted(SRC.rglob("*.py")))
    assert not hits, "references outside the repository:\n" + "\n".join(hits)


def test_reference_scanner_reads_docstrings_and_comments_only(tmp_path):
    """The scanner itself: comments and docstrings are read, other strings are code."""
    path = tmp_path / "mod.py"
    path.write_text('''"""See DESIGN.md."""

X = "../data"  # from ../shared/notes


def f():
    """Layout as in /work/main."""
    return "shared/ is fine in code"
''')
    assert outside_references([path]) == [f"{path}:1: 'DESIGN.md'", f"{path}:7: '/work/'",
                                          f"{path}:3: '../'"]
