"""The one error type every part raises for a problem the user can fix.

It sits at the bottom of the package so that capture, decoding and the viewer can raise it
without knowing the command line, which prints it as one line.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: printed as one line, exit status 2 unless given."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status
