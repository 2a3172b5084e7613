"""Which module a call record names by its index, in each process (module records,
facts/LOGFORMAT.md): the reader's, the viewer's index's, and by the same rules the compiled
decoder's (p11json.c).

Bounded: a trace appended to by many processes (a job run every minute for a year) names a
module per process, and a hostile one can name millions. Past MAX_MODULES the oldest is
forgotten; its calls then show no module path. An index outside 0..255 is not kept: a call
record holds its module index in one byte, so none could name it.
"""

from __future__ import annotations

from typing import Any

MAX_MODULES = 1 << 16
INDEXES = range(256)  # what a call record's one byte of module index can name


class Modules:
    def __init__(self) -> None:
        self._paths: dict[tuple[int, int], Any] = {}

    def named(self, pid: int, index: int, path: Any) -> None:
        """A module record of process pid: index names path from here on."""
        if index not in INDEXES:
            return
        self._paths[(pid, index)] = path  # a name given again keeps its place, as first given
        if len(self._paths) > MAX_MODULES:
            del self._paths[next(iter(self._paths))]

    def get(self, pid: int, index: int) -> Any:
        return self._paths.get((pid, index))
