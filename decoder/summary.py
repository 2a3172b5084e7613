"""Statistics over a trace: per function counts, errors and times; status words; the slowest.

One pass, constant memory apart from per-function totals and two short top lists, so that it
runs over traces of any size.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from p11spy.decoder.events import Apdu, Call, Event

TOP = 10
NEVER_RETURNED = "never returned"  # what stands for the return value of a call that had none


@dataclass
class FunctionStats:
    count: int = 0
    errors: int = 0
    total_us: float = 0.0
    max_us: float = 0.0
    timed: int = 0
    rvs: Counter = field(default_factory=Counter)

    @property
    def mean_us(self) -> float | None:
        return self.total_us / self.timed if self.timed else None


@dataclass
class Summary:
    """Also what the viewer's statistics screen shows, fed from its index (`ref` is then a
    record number rather than a seq)."""

    functions: dict[str, FunctionStats] = field(default_factory=dict)
    status_words: Counter = field(default_factory=Counter)
    slowest_calls: list[tuple[float, int, str]] = field(default_factory=list)
    slowest_apdus: list[tuple[float, int, str]] = field(default_factory=list)
    calls: int = 0
    errors: int = 0
    apdus: int = 0
    top: int = TOP  # how many slowest calls and APDUs are kept

    def add(self, e: Event) -> None:
        if isinstance(e, Call):
            self.add_call(e.function, e.rv, e.rv_name, e.duration_us, e.seq, e.never_returned)
        elif isinstance(e, Apdu):
            label = e.command[:4].hex(" ").upper()
            self.add_apdu(e.sw, e.duration_us, e.seq, label)

    def add_call(self, function: str, rv: int | None, rv_name: str | None,
                 duration_us: float | None, ref: int, never_returned: bool = False) -> None:
        self.calls += 1
        st = self.functions.get(function)
        if st is None:
            st = self.functions[function] = FunctionStats()
        st.count += 1
        if never_returned:  # a failure, if not the module's: counted with the errors
            rv, rv_name = -1, NEVER_RETURNED
        if rv:
            st.errors += 1
            self.errors += 1
        if rv is not None:
            st.rvs[rv_name or f"0x{rv:x}"] += 1
        if duration_us is not None:
            st.timed += 1
            st.total_us += duration_us
            if duration_us > st.max_us:
                st.max_us = duration_us
            _keep(self.slowest_calls, (duration_us, ref, function), self.top)

    def add_apdu(self, sw: str | None, duration_us: float | None = None, ref: int = 0,
                 label: str = "") -> None:
        self.apdus += 1
        self.status_words[sw or "none"] += 1
        if duration_us is not None:
            _keep(self.slowest_apdus, (duration_us, ref, label), self.top)

    @property
    def failures(self) -> dict[tuple[str, str], int]:
        """(function, return value name) -> times, for the calls that failed."""
        return {(fn, name): n for fn, st in self.functions.items()
                for name, n in st.rvs.items() if name != "CKR_OK"}

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "summary", "calls": self.calls, "apdus": self.apdus,
            "functions": {
                name: {"count": s.count, "errors": s.errors,
                       "total_us": s.total_us if s.timed else None,
                       "mean_us": s.mean_us, "max_us": s.max_us if s.timed else None,
                       "return_values": dict(s.rvs)}
                for name, s in sorted(self.functions.items())
            },
            "status_words": dict(self.status_words.most_common()),
            "slowest_calls": [{"seq": q, "function": f, "duration_us": d}
                              for d, q, f in sorted(self.slowest_calls, reverse=True)],
            "slowest_apdus": [{"seq": q, "header": h, "duration_us": d}
                              for d, q, h in sorted(self.slowest_apdus, reverse=True)],
        }


def _keep(heap: list, item: tuple, top: int = TOP) -> None:
    if len(heap) < top:
        heapq.heappush(heap, item)
    else:
        heapq.heappushpop(heap, item)


def summarize(events: Iterable[Event]) -> Summary:
    s = Summary()
    for e in events:
        s.add(e)
    return s


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f}"


def text(s: Summary, out: TextIO) -> None:
    out.write(f"{s.calls} calls, {s.apdus} APDUs\n")
    if s.functions:  # no table without rows (a PC/SC-only trace has no PKCS#11 calls)
        out.write(f"\n{'function':<28} {'count':>7} {'errors':>7} {'total ms':>10} "
                  f"{'mean ms':>9} {'max ms':>9}\n")
    for name, st in sorted(s.functions.items(), key=lambda kv: -kv[1].total_us):
        # "-" where the format records no durations (pkcs11-spy), not a made-up 0.000
        total, top = (_ms(st.total_us), _ms(st.max_us)) if st.timed else ("-", "-")
        out.write(f"{name:<28} {st.count:>7} {st.errors:>7} {total:>10} "
                  f"{_ms(st.mean_us):>9} {top:>9}\n")
    errors = [(n, st) for n, st in s.functions.items() if st.errors]
    if errors:
        out.write("\nreturn values of failing functions:\n")
        for name, st in sorted(errors):
            rvs = ", ".join(f"{k} x{v}" for k, v in st.rvs.most_common() if k != "CKR_OK")
            out.write(f"  {name}: {rvs}\n")
    if s.status_words:
        out.write("\nstatus words:\n")
        for sw, n in s.status_words.most_common():
            out.write(f"  {sw}  x{n}\n")
    if s.slowest_calls:
        out.write("\nslowest calls:\n")
        for d, q, f in sorted(s.slowest_calls, reverse=True):
            out.write(f"  #{q} {f}  {_ms(d)} ms\n")
    if s.slowest_apdus:
        out.write("\nslowest APDUs:\n")
        for d, q, h in sorted(s.slowest_apdus, reverse=True):
            out.write(f"  #{q} {h}  {_ms(d)} ms\n")
