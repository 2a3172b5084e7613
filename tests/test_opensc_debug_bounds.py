"""OpenSC debug logs that no OpenSC writes (a call that never ends, a new thread on every line,
an APDU dump that declares a gigabyte): memory stays flat, every line is kept, and a warning
says what happened."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path

from p11spy.decoder.events import Apdu, Call, Event, LogLine, TraceWarning
from p11spy.decoder.formats.opensc_debug import reader as opensc_debug
from p11spy.decoder.lines import CHUNK

PREFIX = "P:4242; T:0x{tid} 10:00:00.{ms:03d} [pkcs11-tool] "
LOGIN = PREFIX + "pkcs11-session.c:347:C_Login: C_Login(0x5610e4e49b40, 1)\n"
PLAIN = PREFIX + "card.c:473:sc_lock: called with a message as long as OpenSC's often are\n"
MB = 1 << 20


def read_measured(path: Path) -> tuple[list[Event], Counter[int | None], int]:
    """The events but log lines, the count of log lines under each parent, and the reader's
    peak of traced memory (what is kept here is small: the lines are only counted)."""
    kept: list[Event] = []
    under: Counter[int | None] = Counter()
    tracemalloc.start()
    try:
        with path.open("rb") as f:
            for e in opensc_debug.read(f):
                if isinstance(e, LogLine):
                    under[e.parent] += 1
                else:
                    kept.append(e)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return kept, under, peak


def test_a_call_that_never_ends_is_shown_without_its_end(tmp_path: Path) -> None:
    lines = 3 * opensc_debug.CALL_LINES_MAX
    log = tmp_path / "endless.log"
    with log.open("w") as f:
        f.write(LOGIN.format(tid=1, ms=0))
        f.writelines(PLAIN.format(tid=1, ms=i % 1000) for i in range(lines))
    events, under, peak = read_measured(log)
    logins = [e for e in events if isinstance(e, Call)]
    assert [c.function for c in logins] == ["C_Login"] and logins[0].rv is None
    assert any("C_Login" in e.message and "more than" in e.message
               for e in events if isinstance(e, TraceWarning))
    assert sum(under.values()) == lines + 1  # every line kept
    # the bound is looked at once per block of lines read (decoder/lines.py), so a call
    # may pass it by that block
    assert under[logins[0].seq] <= opensc_debug.CALL_LINES_MAX + CHUNK // len(PLAIN)
    assert peak < 24 * MB, peak  # not every line at once (3e5 lines of ~80 characters)


def test_a_new_thread_on_every_line_keeps_every_line(tmp_path: Path) -> None:
    threads = 3 * opensc_debug.THREADS_MAX
    log = tmp_path / "threads.log"
    with log.open("w") as f:
        for tid in range(threads):
            f.write(LOGIN.format(tid=tid, ms=0))
            f.write(PLAIN.format(tid=tid, ms=1))
    events, under, _ = read_measured(log)
    assert sum(under.values()) == 2 * threads
    assert sum(isinstance(e, Call) for e in events) == threads
    assert sum("threads log at once" in e.message
               for e in events if isinstance(e, TraceWarning)) == 1


def test_an_apdu_dump_declaring_more_than_any_apdu_is_read_as_text_past_that(
        tmp_path: Path) -> None:
    hex_line = "00 A4 04 00 07 A0 00 00 03 08 00 00 10 00 01 00 ................\n"
    rows = opensc_debug.APDU_MAX // 16 + 1000
    log = tmp_path / "dump.log"
    with log.open("w") as f:
        f.write(PREFIX.format(tid=1, ms=0) + "apdu.c:382:sc_single_transmit: \n"
                "Outgoing APDU (999999999 bytes):\n")
        f.writelines(hex_line for _ in range(rows))
    with log.open("rb") as f:
        events = list(opensc_debug.read(f))
    [apdu] = [e for e in events if isinstance(e, Apdu)]
    assert len(apdu.command) == opensc_debug.APDU_MAX
    assert any("999999999 bytes" in e.message for e in events if isinstance(e, TraceWarning))
    [rest] = [e for e in events if isinstance(e, LogLine)]  # the lines past it, as text
    assert rest.text.split("\n") == [hex_line.rstrip("\n")] * 1000
