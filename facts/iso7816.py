"""Which card commands carry a PIN in clear: the one answer the preloaded spy (its generated
C, shim_build/codegen.py) and every redactor (decoder/apdu/pin.py) mask by.

ISO 7816-4: VERIFY (20, 21), CHANGE REFERENCE DATA (24, 25) and RESET RETRY COUNTER (2C, 2D)
send reference data (a PIN, a PUK, a resetting code) in their data field. Under secure
messaging that field is a cryptogram, not a PIN; under any other class, proprietary ones
(GlobalPlatform's reading of their secure-messaging bits) included, it is masked: when in
doubt, mask.
"""

from __future__ import annotations

PIN_INS = frozenset({0x20, 0x21, 0x24, 0x25, 0x2C, 0x2D})


def secure_messaging(cla: int) -> bool:
    """Whether a class byte says secure messaging: bit 6 of a further interindustry class,
    bits 4-3 of a first one (GlobalPlatform reads proprietary classes alike)."""
    return bool(cla & 0x20) if cla & 0x40 else bool((cla >> 2) & 3)


def pin_in_clear(cla: int, ins: int) -> bool:
    """Whether a command with this class and instruction sends a PIN in clear (given data)."""
    return ins in PIN_INS and not secure_messaging(cla)


def c_defines() -> str:
    """pin_in_clear as C, for the preloaded spy."""
    cases = " ".join(f"case 0x{i:02x}:" for i in sorted(PIN_INS))
    return (
        "static inline int p11_pin_in_clear(unsigned char cla, unsigned char ins)\n{\n"
        f"    switch (ins) {{ {cases} break; default: return 0; }}\n"
        "    return (cla & 0x40) ? !(cla & 0x20) : !((cla >> 2) & 3);\n}\n"
    )
