"""Errors that reach the user as one line on stderr.

`AblateError` is a runtime failure (exit 1); `UsageError` is bad input from the
command line or the config (exit 2). The CLI catches both and prints only the
message, so every message must name the thing that is wrong and, where there is
one, the fix. `Interrupted` is a training run stopped after its checkpoint (exit 130).
"""


class AblateError(Exception):
    exit_code = 1


class UsageError(AblateError):
    exit_code = 2


class Interrupted(Exception):
    """A training run stopped on purpose (Ctrl-C, a test's stop_after) after writing its checkpoint.

    Not an AblateError: nothing is wrong, and the CLI exits 130 so scripts can tell a stop
    from a failure; rerunning the same command resumes."""
