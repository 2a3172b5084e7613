"""Pairs a call's ENTRY record with the record written when it returned (facts/LOGFORMAT.md).

Why a module of its own: the reader and the viewer's index must agree on which entry a return
closes, or a call would show twice in one and never-returned in the other. A return closes the
latest open entry of the same function, pid, thread, start time and call number (the key is
facts/logformat.py's call_key): nested calls on one thread return in the reverse order they
entered, and the start time keeps two processes that had the same pid (containers, reruns
appending to one file) apart.

What is left open when the trace ends never returned, unless the process's records went
missing after it entered (a DROPPED record: disk full): its return may be among them, so it is
only a call with no return recorded. So that a damaged or hostile trace cannot make a reader
hold every entry it ever saw, at most MAX_OPEN entries (and MAX_BYTES of them) are held;
beyond that the oldest is given up as never returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_OPEN = 1 << 16  # calls open at once: far more than any process has threads
MAX_BYTES = 64 << 20  # bytes of open entries a reader holds


class OpenCalls(Generic[T]):
    """Entries not yet closed, in the order they were entered. What they give back is
    (item, doubtful): doubtful when records of its process went missing after it entered."""

    def __init__(self) -> None:
        # key -> its open entries [item, size, doubtful], latest last (nearly always one);
        # public so that a hot loop can test a key without a call
        self.items: dict[bytes, list[list]] = {}
        self._count = 0
        self._bytes = 0

    def enter(self, key: bytes, item: T, size: int = 0) -> list[tuple[T, bool]]:
        """Holds item until its return; gives back the entries given up to make room."""
        stack = self.items.get(key)
        if stack is None:
            self.items[key] = [[item, size, False]]
        else:
            stack.append([item, size, False])
        self._count += 1
        self._bytes += size
        given_up = []
        while self._count > MAX_OPEN or (self._bytes > MAX_BYTES and self._count > 1):
            given_up.append(self._take(next(iter(self.items)), 0))
        return given_up

    def leave(self, key: bytes) -> T | None:
        """The open entry a return with this key closes, if any."""
        return self._take(key, -1)[0] if key in self.items else None

    def records_lost(self, pid: bytes) -> None:
        """Records of this process (its pid as the header holds it) went missing here: the
        returns of the entries open now may be among them."""
        for key, stack in self.items.items():
            if key[2:6] == pid:
                for entry in stack:
                    entry[2] = True

    def _take(self, key: bytes, at: int) -> tuple[T, bool]:
        stack = self.items[key]
        item, size, doubtful = stack.pop(at)
        if not stack:
            del self.items[key]
        self._count -= 1
        self._bytes -= size
        return item, doubtful

    def drain(self) -> Iterator[tuple[T, bool]]:
        """The entries never closed, in the order they were entered."""
        while self.items:
            yield self._take(next(iter(self.items)), 0)
