"""The shim and `p11spy redact` mask from one table (facts/pkcs11/attributes.py: which
attributes are secret, always or where their object may be a key, and which object classes
hold no key): the same calls, captured by the shim with its default masking and captured with
secrets shown then redacted, come out with the same values masked, for every attribute the
facts know (and a vendor-defined and an unlisted number) under every object class (and a
vendor-defined, an unknown and no class, sensitive or not)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from p11spy.decoder import redact
from p11spy.decoder.formats.p11spy import frames
from p11spy.decoder.formats.registry import open_file
from p11spy.facts.logformat import Kind, RecordType
from p11spy.facts.pkcs11 import attributes, functions
from p11spy.facts.pkcs11.constants import CKA, CKO

from .conftest import USER_PIN
from .cprogs import build

VALUE = b"agree-value-0123"  # what shim_c/classes.c (mode table) puts in the attribute under test
_CREATE = functions.BY_NAME["C_CreateObject"].index
_FIXED = {CKA.value_of(n) for n in ("CKA_CLASS", "CKA_SENSITIVE", "CKA_TOKEN")}
VENDOR_CLASS = CKO.value_of("CKO_VENDOR_DEFINED") | 0x4B4559


def _cases() -> list[tuple[int | None, int, int]]:
    """(class or None, attribute, sensitive) for every combination."""
    classes: list[int | None] = [*sorted(set(CKO.canonical)), VENDOR_CLASS, 0x7777, None]
    attrs = [a for a in sorted(attributes.ATTRIBUTES) if a not in _FIXED]
    attrs += [CKA.value_of("CKA_VENDOR_DEFINED") | 0x1234, 0x7FFF0001]
    cases = [(c, a, 0) for c in classes for a in attrs]
    cases += [(c, a, 1) for c in (None, CKO.value_of("CKO_DATA")) for a in attrs]
    return cases


def _masked(trace: Path, redacted: bool) -> list[list[int]]:
    """Per C_CreateObject, the attributes whose value the trace does not show: MASKED in a
    capture, all marker bytes in a redacted one."""
    out = []
    with open_file(trace) as f:
        for kind, _off, rec in frames.frames(f):
            if kind != frames.RECORD or rec[8] != RecordType.CALL or \
                    int.from_bytes(rec[10:12], "little") != _CREATE:
                continue
            for param, _ph, fkind, _fl, start, n in frames.fields(rec):
                if param == 1 and fkind == Kind.TEMPLATE:
                    data = rec[start:start + n]
                    out.append([t for t, _l, vk, s, e in frames.attributes(data)
                                if (vk == Kind.MASKED if not redacted else
                                    data[s:e] == b"*" * len(VALUE))])
    return out


def test_shim_and_redact_mask_the_same_values(token, tmp_path, spy_env, shim) -> None:
    prog = build("classes", tmp_path)
    cases = _cases()
    lines = "".join(f"{'-' if c is None else f'{c:x}'} {a:x} {s}\n" for c, a, s in cases)
    traces = {}
    for name, extra in (("masked", {}), ("shown", {"P11SPY_LOG_SECRETS": "1"})):
        traces[name] = tmp_path / f"{name}.p11"
        res = subprocess.run([str(prog), str(shim), USER_PIN, "table"], input=lines, text=True,
                             capture_output=True, env=spy_env(token, traces[name], **extra),
                             timeout=600)
        assert res.returncode == 0 and res.stdout == f"{len(cases)} calls\n", res.stderr
    red = tmp_path / "redacted.p11"
    with open_file(traces["shown"]) as fin, red.open("wb") as fout:
        redact.redact("p11spy", fin, fout)
    by_shim, by_redact = _masked(traces["masked"], False), _masked(red, True)
    assert len(by_shim) == len(by_redact) == len(cases)
    assert _masked(traces["shown"], False) == [[]] * len(cases)  # shown: nothing masked
    differ = [(c, CKA.name_of(a), s, shim_, red_)
              for (c, a, s), shim_, red_ in zip(cases, by_shim, by_redact, strict=True)
              if shim_ != red_]
    assert differ == []
    # and the table is what decides: CKA_VALUE masked under a key class, not a keyless one
    value = CKA.value_of("CKA_VALUE")
    decided = {(c, s): value in m for (c, a, s), m in zip(cases, by_shim, strict=True)
               if a == value}
    assert decided[(CKO.value_of("CKO_OTP_KEY"), 0)] and decided[(VENDOR_CLASS, 0)]
    assert decided[(None, 0)] and decided[(CKO.value_of("CKO_DATA"), 1)]
    assert not decided[(CKO.value_of("CKO_CERTIFICATE"), 0)]
    assert any(m for m in by_shim) and not all(m for m in by_shim)


_PIN_MAIN = r"""
#include <stdio.h>
int main(void)
{
    for (int cla = 0; cla < 256; cla++)
        for (int ins = 0; ins < 256; ins++)
            putchar('0' + p11_pin_in_clear((unsigned char)cla, (unsigned char)ins));
    return 0;
}
"""


def test_the_preloaded_spy_and_redact_take_pin_apdus_from_one_table(tmp_path) -> None:
    """Which APDUs carry a PIN in clear (facts/iso7816.py): the C the preloaded spy is built
    with (it is in the generated source) answers as redact's pin_field does, for every class
    and instruction of a command with data."""
    from p11spy.decoder.apdu import pin_field
    from p11spy.facts import iso7816
    from shim_build.codegen import generate

    c = iso7816.c_defines()
    assert c in generate()
    src = tmp_path / "pin.c"
    src.write_text(c + _PIN_MAIN)
    prog = tmp_path / "pin"
    subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-o", str(prog), str(src)], check=True)
    by_spy = subprocess.run([str(prog)], capture_output=True, text=True, check=True).stdout
    by_redact = "".join("1" if pin_field(bytes([cla, ins, 0, 0x80, 2, 0x31, 0x32])) else "0"
                        for cla in range(256) for ins in range(256))
    assert by_spy == by_redact
    assert by_spy.count("1") > 6  # VERIFY and the others, under many classes
    assert by_spy[0x00 * 256 + 0x20] == "1" and by_spy[0x0C * 256 + 0x20] == "0"  # SM: not
    assert by_spy[0x80 * 256 + 0x20] == "1"  # a proprietary class: masked (when in doubt)
