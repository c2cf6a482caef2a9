"""The failures a command reports in one line instead of a traceback.

- :class:`InputError`: the user's input is wrong: a missing or unreadable file, a bad
  option value, data that cannot be used. Every "bad input" error of the package
  derives from it (``ConfigError``, ``DataError``, ``ImageReadError``, ...), so a caller
  catches one thing; it is a ``ValueError``, so older ``except ValueError`` still works.
- :class:`RunFailure`: the input was fine but the run could not finish (training diverged).

How a command maps them (and ``FileNotFoundError``) to exit statuses is in
:data:`virtual_ihc.runtime.EXIT_STATUSES`. Any other exception is a bug, or a failure
not classified yet, and keeps its traceback.
"""


class InputError(ValueError):
    """The input (a file, a folder, an option value) cannot be used; the message names it."""


class RunFailure(RuntimeError):
    """A run started on valid input and could not finish; the message says what happened."""
