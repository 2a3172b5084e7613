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
beyond that the oldest is given up as never returned. PC/SC calls waiting for their call to
return (Waiting) are bounded the same way.
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


K = TypeVar("K")

# The most bytes of PC/SC records held for calls that have not returned yet (a real call waits
# for a few hundred APDUs: a card's key generation, a slot polled for minutes).
MAX_WAITING = 4 << 20


class Waiting(Generic[K, T]):
    """PC/SC calls made under a call that has not returned yet (their records come before the
    call's), by the call's key, so that they can follow it. Bounded: past MAX_WAITING bytes of
    their records, the oldest wait is given up (a trace whose calls never return would
    otherwise be held whole). The reader and the viewer's index give up the same ones."""

    def __init__(self) -> None:
        self.items: dict[K, list[T]] = {}  # public so that a hot loop can test it
        self._sizes: dict[K, int] = {}
        self._held = 0

    def add(self, key: K, item: T, size: int) -> list[tuple[K, list[T]]]:
        """Keeps item for the call key; gives back the waits given up to make room."""
        group = self.items.get(key)
        if group is None:
            self.items[key] = [item]
        else:
            group.append(item)
        self._sizes[key] = self._sizes.get(key, 0) + size
        self._held += size
        given_up = []
        while self._held > MAX_WAITING:
            oldest = next(iter(self.items))
            given_up.append((oldest, self.take(oldest)))
        return given_up

    def take(self, key: K) -> list[T]:
        """What waited for the call key (it returned), or nothing."""
        self._held -= self._sizes.pop(key, 0)
        return self.items.pop(key, [])

    def drain(self) -> Iterator[tuple[K, list[T]]]:
        """What still waits at the end of the trace, oldest first."""
        while self.items:
            key = next(iter(self.items))
            yield key, self.take(key)
