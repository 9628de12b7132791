"""User-facing errors: one line, no traceback."""


class UserError(Exception):
    """A problem with the user's input or environment.

    The command line prints ``error: <message>`` and exits with status 2; the
    message must be a single line that says what is wrong and what to do.
    """
