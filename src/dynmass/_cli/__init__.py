"""Subcommands of the ``dynmass`` CLI, one module each (see :mod:`dynmass.cli`)."""
