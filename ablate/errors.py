"""Errors that reach the user as one line on stderr.

`AblateError` is a runtime failure (exit 1); `UsageError` is bad input from the
command line or the config (exit 2). The CLI catches both and prints only the
message, so every message must name the thing that is wrong and, where there is
one, the fix.
"""


class AblateError(Exception):
    exit_code = 1


class UsageError(AblateError):
    exit_code = 2
