"""Mechanism and key rules: a mechanism the token refused, a key whose usage attribute forbids
the operation, and CKR_BUFFER_TOO_SMALL asked again and again.

These name what the token said no to (the mechanism, the CKA_* attribute) and set it against
what the trace showed earlier (C_GetMechanismList, the key's attributes).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from p11spy.decoder.diagnose.base import Evidence, Finding, Rule, Tracker, finding, in_value
from p11spy.decoder.diagnose.rules.common import (
    BUFFER_TOO_SMALL,
    KEY_FUNCTION_NOT_PERMITTED,
    MECHANISM_INVALID,
    call_ev,
    keep,
)
from p11spy.decoder.events import Call, Event
from p11spy.facts.pkcs11 import attributes


class MechanismNotSupported(Rule):
    name = "mechanism-not-supported"

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, Any]] = {}

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call) or e.rv != MECHANISM_INVALID \
                or e.function == "C_GetMechanismInfo":
            return
        mech = e.args.get("pMechanism")
        name = mech.get("mechanism") if isinstance(mech, dict) else None
        name = str(name) if name is not None else "the mechanism"
        slot = t.slot_of(e)
        listed = t.proc(e.pid).mechanisms.get(slot)
        g = self.groups.setdefault(name, {"ev": [], "function": e.function, "pid": e.pid})
        if listed is not None and not g.get("listed"):
            seq, mechs = listed
            g["listed"] = name in mechs
            g["list_seq"] = seq
            g["ev"].append(Evidence(seq, f"C_GetMechanismList: {len(mechs)} mechanisms, "
                                         + ("including" if name in mechs else "without")
                                         + f" {name}"))
        keep(g["ev"], call_ev(e, name))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for name, g in self.groups.items():
            if "listed" not in g:
                listed = ("The trace has no C_GetMechanismList of this token to compare with.")
            elif g["listed"]:
                listed = (f"The token does list it (C_GetMechanismList #{g['list_seq']}), but "
                          "not for this function or key type: C_GetMechanismInfo tells what "
                          "it may do (CKF_SIGN, CKF_DECRYPT, ...).")
            else:
                listed = (f"It is not in the token's mechanism list (C_GetMechanismList "
                          f"#{g['list_seq']}).")
            yield finding(self.name, g["ev"], pid=g["pid"], mechanism=name,
                          function=g["function"], listed=listed,
                          data={"mechanism": name, "listed": g.get("listed")})


_OPERATION = {"CKA_SIGN": "signing", "CKA_VERIFY": "verifying", "CKA_ENCRYPT": "encrypting",
              "CKA_DECRYPT": "decrypting", "CKA_WRAP": "wrapping keys",
              "CKA_UNWRAP": "unwrapping keys", "CKA_DERIVE": "deriving keys",
              "CKA_SIGN_RECOVER": "signing with recovery",
              "CKA_VERIFY_RECOVER": "verifying with recovery",
              "CKA_ENCAPSULATE": "encapsulating", "CKA_DECAPSULATE": "decapsulating"}


class KeyUsage(Rule):
    """CKR_KEY_FUNCTION_NOT_PERMITTED and the usage attribute that forbids it."""

    name = "key-usage"

    def __init__(self) -> None:
        self.groups: dict[tuple[Any, str, Any], dict[str, Any]] = {}

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call) or e.rv != KEY_FUNCTION_NOT_PERMITTED:
            return
        usage = attributes.KEY_USAGE.get(e.function)
        if usage is None:
            return
        attr, param = usage
        handle = e.args.get(param)
        known = t.proc(e.pid).objects.get(handle, {})
        g = self.groups.setdefault((e.pid, e.function, handle),
                                   {"ev": [], "attr": attr, "known": known.get(attr)})
        if not g["ev"] and attr in known:
            v, seq = known[attr]
            g["ev"].append(Evidence(seq, f"{attr} = {str(v).lower()} for key {handle}"))
        keep(g["ev"], call_ev(e, f"key {handle}"))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for (pid, function, handle), g in self.groups.items():
            attr = g["attr"]
            known = g["known"]
            if known is not None:
                value = str(known[0]).lower()
                state = f"is {value} (#{known[1]})"
            else:
                value = "not true"
                state = "is not true (the trace does not show its value)"
            yield finding(self.name, g["ev"], pid=pid, function=function, attribute=attr,
                          value=value, state=state, operation=_OPERATION.get(attr, function),
                          data={"attribute": attr, "key": handle, "value": value})


class BufferTooSmallLoop(Rule):
    """CKR_BUFFER_TOO_SMALL again and again from one function in one session."""

    name = "buffer-too-small-loop"
    THRESHOLD = 3
    MAX_LOOPS = 10  # loops reported (each its own finding)

    def __init__(self) -> None:
        self.runs: dict[tuple[Any, str, Any], list[tuple[Evidence, Any]]] = {}
        self.done: list[tuple[str, list[tuple[Evidence, Any]], Any]] = []

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call):
            return
        key = (e.pid, e.function, e.args.get("hSession", e.args.get("slotID")))
        if e.rv == BUFFER_TOO_SMALL:
            size = next((in_value(v) for k, v in e.args.items()
                         if k.startswith("pul") and isinstance(v, dict)), None)
            keep(self.runs.setdefault(key, []), (call_ev(e), size))
        elif key in self.runs:
            run = self.runs.pop(key)
            if len(run) >= self.THRESHOLD and len(self.done) < self.MAX_LOOPS:
                self.done.append((e.function, run, e.pid))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for (pid, function, _h), run in self.runs.items():
            if len(run) >= self.THRESHOLD and len(self.done) < self.MAX_LOOPS:
                self.done.append((function, run, pid))
        for function, run, pid in self.done:
            sizes = [s for _, s in run if s is not None]
            growth = ""
            if sizes and len(set(map(str, sizes))) == 1:
                growth = f", each time with the same buffer size ({sizes[0]})"
            yield finding(self.name, [ev for ev, _ in run], pid=pid, function=function,
                          n=len(run), growth=growth, data={"calls": len(run)})


RULES = (MechanismNotSupported, KeyUsage, BufferTooSmallLoop,)
