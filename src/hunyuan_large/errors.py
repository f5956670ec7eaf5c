"""The error type for user mistakes: the CLI prints its message as one line, no traceback."""


class UserError(Exception):
    """A bad input from the user (path, value, file); the message says what and what is allowed."""
