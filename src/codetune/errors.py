"""Error types shared by every command.

A ``CodetuneError`` is a user-facing problem (bad input, missing file, conflicting options):
the CLI prints its message and exits with status 2, without a traceback. Anything else is a
bug or an environment failure and keeps its traceback.
"""


class CodetuneError(Exception):
    """A problem the user can fix; the message says what to change."""

    exit_code = 2


class ConfigError(CodetuneError):
    """A configuration file or ``--set`` override is invalid."""
