"""Errors a user can fix (bad configuration, missing or stale input data, unsafe files).

Scripts print these as one ``error: ...`` line and exit with status 2
(:func:`dkolib.study.cli.run_cli`); any other exception is a bug and keeps its traceback.
All derive from ``ValueError`` so that callers catching ``ValueError`` keep working.
"""


class InputError(ValueError):
    """Bad input that the user can fix; the message says what is wrong and how to fix it."""


class DataError(InputError):
    """A dataset, library or results file is missing, unreadable, stale or malformed."""
