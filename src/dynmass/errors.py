"""Exception types. Every error a user can cause names the file, column and problem."""

from __future__ import annotations


class DynmassError(Exception):
    """Base class of all dynmass errors."""


class InputError(DynmassError, ValueError):
    """Bad input: a missing column, a non-finite value, a foreign or truncated file, an option
    outside its sense. The message names the file (when there is one), the column and the
    problem.

    Parameters
    ----------
    message : str
        What is wrong.
    path : str or os.PathLike, optional
        The file the problem was found in.
    column : str, optional
        The column (dataset) the problem was found in.
    """

    def __init__(self, message: str, path: object | None = None, column: str | None = None):
        self.path = None if path is None else str(path)
        self.column = column
        where = []
        if self.path is not None:
            where.append(f"file '{self.path}'")
        if column is not None:
            where.append(f"column '{column}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class SettingsMismatchError(InputError):
    """Data made with different settings than a model (or another stage) expects."""
