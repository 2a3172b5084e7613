"""What two runs can be compared on: a call's arguments and results with what always differs
left out.

Two runs of the same work never agree on handles, times, random data, signatures or ciphertext,
and two tracers render the same call a little differently (pkcs11-spy shows a PIN's bytes,
p11spy its length and class; one records the room a client offered, the other does not). The
parameter roles of the function table (facts/pkcs11) decide what each argument becomes, so the
same call reads the same from every trace format. A PIN becomes its length and character class,
never its bytes. Shared by `p11spy diff` and anything else that lines calls up (the report).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p11spy.decoder.events import Call
from p11spy.decoder.export.rows import pin_summary
from p11spy.facts.pkcs11.functions import BY_NAME
from p11spy.facts.pkcs11.model import Param, Role

# The calls that hand out the function list: which one a client (or a tracer in front of the
# module) uses says how the module was loaded, not what the client asked of the token.
BOOTSTRAP = frozenset({"C_GetFunctionList", "C_GetInterface", "C_GetInterfaceList"})

# Fields of an output struct that change from one moment to the next on the same token.
VOLATILE_FIELDS = frozenset({
    "utcTime", "ulSessionCount", "ulRwSessionCount", "ulFreePublicMemory",
    "ulFreePrivateMemory", "ulTotalPublicMemory", "ulTotalPrivateMemory", "ulDeviceError",
})

# Attribute values that differ between two keys made the same way (generated key material).
LENGTH_ONLY_ATTRIBUTES = frozenset({
    "CKA_MODULUS", "CKA_VALUE", "CKA_EC_POINT", "CKA_PUBLIC_KEY_INFO", "CKA_CHECK_VALUE",
    "CKA_PRIVATE_EXPONENT", "CKA_PRIME_1", "CKA_PRIME_2", "CKA_EXPONENT_1", "CKA_EXPONENT_2",
    "CKA_COEFFICIENT", "CKA_UNIQUE_ID",
})


@dataclass(frozen=True)
class Comparable:
    """A call as two runs compare it: inputs (what was asked) and outputs (what came back)."""

    function: str
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    rv: str | None = None
    length_query: bool = False

    @property
    def key(self) -> str:
        """What alignment matches on: the function and what it was asked."""
        lq = " (length query)" if self.length_query else ""
        return self.function + lq + json.dumps(self.inputs, sort_keys=True, default=str)


def size_of(value: Any) -> str | None:
    """A buffer's size in words ("20 bytes"), from its hex rendering or a masked record."""
    if isinstance(value, str):
        return f"{len(value) // 2} bytes"
    if isinstance(value, dict) and "length" in value:
        return f"{value['length']} bytes"
    return None


def _phase(value: Any, phase: str) -> Any:
    """The in or out side of a value recorded as {"in": .., "out": ..}, or the value itself."""
    if isinstance(value, dict) and set(value) <= {"in", "out"} and value:
        return value.get(phase)
    return value if phase == "in" else None


def _attr_value(attr: dict[str, Any]) -> Any:
    name = attr.get("type")
    if "value" not in attr:
        return f"{attr.get('len')} bytes (no value)"
    v = attr["value"]
    if name in LENGTH_ONLY_ATTRIBUTES:
        return size_of(v) or v
    if isinstance(v, dict) and v.get("masked"):
        return f"masked, {v.get('length')} bytes"
    return v


def template(items: Any) -> dict[str, Any] | None:
    """A template as {attribute type: value}, so attributes compare by name, in any order."""
    if not isinstance(items, list):
        return None if items is None else {"(unreadable)": str(items)}
    return {str(a.get("type")): _attr_value(a) for a in items if isinstance(a, dict)}


def _struct(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if k not in VOLATILE_FIELDS}


def _mechanism(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    par = value.get("parameter")
    if isinstance(par, str):
        par = size_of(par)  # an IV or nonce: random by nature, its size is what matters
    return {"mechanism": value.get("mechanism"), "parameter": par}


def _text(value: Any) -> Any:
    return value.rstrip() if isinstance(value, str) else value


def _count(value: Any) -> Any:
    return f"{len(value)} handles" if isinstance(value, list) else value


# role -> (side, what the value becomes); side None: left out (handles, pointers, random data)
_IN, _OUT = "inputs", "outputs"
Rule = tuple[str | None, Callable[[Any], Any]]
_ROLES: dict[Role, Rule] = {
    Role.ULONG: (_IN, lambda v: v),
    Role.BOOL: (_IN, lambda v: v),
    Role.ENUM: (_IN, lambda v: v),
    Role.FLAGS: (_IN, lambda v: v),
    Role.CSTRING: (_IN, _text),
    Role.TEXT_FIXED: (_IN, _text),
    Role.PIN: (_IN, pin_summary),
    Role.BYTES_IN: (_IN, size_of),
    Role.BYTES_INOUT: (_IN, size_of),
    Role.TEMPLATE_IN: (_IN, template),
    Role.MECHANISM: (_IN, _mechanism),
    Role.STRUCT_IN: (_IN, _struct),
    Role.INIT_ARGS: (_IN, _struct),
    Role.STRUCT_OUT: (_OUT, _struct),
    Role.ULONG_OUT: (_OUT, lambda v: v),
    Role.LENGTH_PTR: (_OUT, lambda v: _phase(v, "out")),
    Role.LENGTH: (None, lambda v: v),  # described with its buffer
    Role.BYTES_OUT: (None, lambda v: v),  # signatures, ciphertext, random bytes
    Role.BYTES_OUT_FIXED: (None, lambda v: v),
    Role.HANDLE_OUT: (None, lambda v: v),
    Role.POINTER: (None, lambda v: v),
    Role.FUNCTION_LIST_OUT: (None, lambda v: v),
    Role.INTERFACE_LIST_OUT: (None, lambda v: v),
    Role.INTERFACE_OUT: (None, lambda v: v),
}


def _param(p: Param, value: Any, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
    if p.role is Role.HANDLE:
        if p.kind == "slot":  # which slot is a real difference; session and object handles not
            inputs[p.name] = value
        return
    if p.role is Role.TEMPLATE_INOUT:  # C_GetAttributeValue: types asked, values got back
        asked = _phase(value, "in")
        inputs[p.name] = [a.get("type") for a in asked if isinstance(a, dict)] \
            if isinstance(asked, list) else asked
        outputs[p.name] = template(_phase(value, "out"))
        return
    if p.role is Role.ARRAY_OUT:
        outputs[p.name] = _count(value) if p.kind == "object" else value
        return
    side, convert = _ROLES.get(p.role, (_IN, lambda v: v))
    if side is not None:
        (inputs if side == _IN else outputs)[p.name] = convert(value)


def _unknown(name: str, value: Any, inputs: dict[str, Any]) -> None:
    """A function the table does not know (a vendor's): its handles are guessed by name."""
    if name[:1] == "h" and name[1:2].isupper() or name[:2] == "ph" and name[2:3].isupper():
        return
    inputs[name] = value


def comparable(call: Call) -> Comparable:
    fn = BY_NAME.get(call.function)
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    params = {p.name: p for p in fn.params} if fn else {}
    for name, value in call.args.items():
        p = params.get(name)
        if p is None:
            _unknown(name, value, inputs)
        else:
            _param(p, value, inputs, outputs)
    return Comparable(call.function, inputs, outputs, call.rv_name or _rv(call.rv),
                      call.length_query)


def _rv(rv: int | None) -> str | None:
    return None if rv is None else f"0x{rv:x}"
