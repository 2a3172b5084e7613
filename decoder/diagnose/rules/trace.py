"""The trace itself: a file cut short or missing records.

Why a rule: several rules draw conclusions from what a trace does not show (no C_Finalize, a
call without its return, no work after a failure). In an incomplete trace those are not facts,
so those rules stay silent there, and this one says why, with the reader's warning.
"""

from __future__ import annotations

from collections.abc import Iterable

from p11spy.decoder.diagnose.base import Evidence, Finding, Rule, Tracker, finding
from p11spy.decoder.events import DROPPED, TRUNCATED

# kind of gap -> what the title says of it
GAPS = {TRUNCATED: "the file was cut short", DROPPED: "the tracer could not write some records"}


class TraceIncomplete(Rule):
    """The reader met the end of the file inside a record or a line, or a record saying that
    records were lost."""

    name = "trace-incomplete"

    def finish(self, t: Tracker) -> Iterable[Finding]:
        if not t.gaps:
            return
        ev = [Evidence(w.seq, w.message) for w in t.gaps.values()]
        what = " and ".join(GAPS[k] for k in GAPS if k in t.gaps)
        yield finding(self.name, ev, what=what, first=f"#{ev[0].seq}",
                      data={"gaps": sorted(t.gaps)})


RULES = (TraceIncomplete,)
