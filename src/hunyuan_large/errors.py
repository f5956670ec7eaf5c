"""The error type for user mistakes: the CLI prints its message as one line, no traceback."""


class UserError(Exception):
    """A bad input from the user (path, value, file); the message says what and what is allowed."""


def check(ok: bool, message: str, error: type[Exception] = UserError) -> None:
    """Raise `error(message)` unless `ok`: how every value of the project is validated."""
    if not ok:
        raise error(message)


def require(checks: list[tuple[bool, str]], error: type[Exception] = UserError, prefix: str = "") -> None:
    """`check` over a list of (ok, message) pairs: raise for the first that fails."""
    for ok, message in checks:
        check(ok, prefix + message, error)


def is_int(x) -> bool:
    """An int that is not a bool (JSON and TOML values)."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x) -> bool:
    """An int or float that is not a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)
