"""The timing rule: the slowest calls and the APDUs under them, when a trace took long enough
to be worth a look.

Not a fault but the first question after "why did it fail": "why is it slow". One pass with a
small heap, since a call's APDUs follow it in the trace.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from p11spy.decoder.diagnose.base import Evidence, Finding, Rule, Tracker, finding
from p11spy.decoder.diagnose.rules.common import apdu_ev, ms, plural
from p11spy.decoder.events import Apdu, Call, Event


class WhereTimeWent(Rule):
    """The slowest calls with the APDUs under them (one pass: a call's APDUs follow it)."""

    name = "where-time-went"
    TOP = 5
    MIN_TOTAL_US = 20_000.0  # below this nothing is worth pointing at

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, str, int, float, Any]] = []
        self.current: list[Any] | None = None  # [dur, seq, fn, apdus, apdu_us, slowest apdu]
        self.total_us = 0.0
        self.apdu_total_us = 0.0
        self.calls = 0

    def _flush(self) -> None:
        c = self.current
        if c is None:
            return
        item = (c[0], c[1], c[2], c[3], c[4], c[5])
        if len(self.heap) < self.TOP:
            heapq.heappush(self.heap, item)
        else:
            heapq.heappushpop(self.heap, item)
        self.current = None

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, Call):
            self._flush()
            if e.duration_us is not None:
                self.calls += 1
                self.total_us += e.duration_us
                self.current = [e.duration_us, e.seq, e.function, 0, 0.0, None]
        elif isinstance(e, Apdu):
            us = e.duration_us or 0.0
            self.apdu_total_us += us
            c = self.current
            if c is not None and e.parent == c[1]:
                c[3] += 1
                c[4] += us
                if c[5] is None or us > c[5][0]:
                    c[5] = (us, e.seq, apdu_ev(e).what)

    def finish(self, t: Tracker) -> Iterable[Finding]:
        self._flush()
        if not self.heap or self.total_us < self.MIN_TOTAL_US:
            return
        top = sorted(self.heap, reverse=True)
        ev = []
        for dur, seq, fn, n, apdu_us, slowest in top:
            note = f"{ms(dur)}"
            if n:
                note += f", {plural(n, 'APDU')} taking {ms(apdu_us)}"
            ev.append(Evidence(seq, f"{fn}: {note}"))
            if slowest is not None and slowest[0] > 0:
                ev.append(Evidence(slowest[1], f"the slowest APDU under #{seq}, "
                                               f"{ms(slowest[0])}: {slowest[2]}"))
        dur, seq, fn, n, _, _ = top[0]
        head = f"#{seq} {fn} {ms(dur)}" + (f" ({plural(n, 'APDU')})" if n else "")
        shown = sum(x[0] for x in top)
        share = (f"These {len(top)} calls took {ms(shown)} of the {ms(self.total_us)} spent "
                 f"in {self.calls} timed calls ({100 * shown / self.total_us:.0f}%)")
        if self.apdu_total_us:
            share += f"; the card's APDUs took {ms(self.apdu_total_us)} in all"
        yield finding(self.name, ev, in_order=False, top=head, share=share + ".",
                      data={"total_us": self.total_us, "apdu_us": self.apdu_total_us,
                            "slowest": [{"seq": s, "function": f, "duration_us": d,
                                         "apdus": n} for d, s, f, n, _, _ in top]})


RULES = (WhereTimeWent,)
