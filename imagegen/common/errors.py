"""The errors a user can cause: shown as one line, never as a traceback."""


class UserError(Exception):
    """Bad input or a failed operation the user can fix; exit code 1."""

    exit_code = 1


class UsageError(UserError):
    """A command used wrongly (bad option value, conflicting options); exit code 2."""

    exit_code = 2


class PeerError(UserError):
    """An error rank 0 of a distributed job already reported; the other ranks exit quietly."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def brief(error: BaseException, limit: int = 160) -> str:
    """An exception's first line, cut at a word boundary to at most `limit` characters."""
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else type(error).__name__
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + " ..."
