"""The one exception type that carries a message meant for the user.

Everything the user can fix (a wrong path, an unknown model, incompatible tokenizers, a position
outside the file) is raised as `SpectabError` with a single line that says what to do. The CLI and
the server print that line as it is; anything else is a bug and is reported as one.
"""


class SpectabError(Exception):
    """A problem the user can fix; `str(err)` is one line that says how."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, for one-line reports of third-party errors."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
