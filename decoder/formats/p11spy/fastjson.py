"""`decode --json` of a p11spy binary trace by the compiled decoder (p11json.c), when it is there.

Why: in Python a record costs about 12 us, so a binary trace, which holds no line that needs
no decoding, decoded at a ninth of the speed of an OpenSC debug log. The C walks the records
and writes the rows; what it does not know it asks here, and the answers are the Python
reader's own code:

- names (constants, attributes, instructions, return codes), cached in C;
- a field it is not sure of, by `call_field_value` / `pcsc_field_value`;
- a record that is no call (process, module, dropped) by `other_record`, a PC/SC record it
  is not sure of by `decode_pcsc`;
- each row by `render.row`, as `render.jsonl` writes it.

So the output is the Python reader's, byte for byte (tests/test_fastjson.py holds them to it on
every fixture, the hostile corpus and damaged variants). A trace whose records do not chain
cleanly (a damaged stretch, a big-endian writer) is left to the Python reader whole, as is any
input that is not a regular file, and everything when the library was not built or
P11SPY_DECODER=python is set.
"""

from __future__ import annotations

import os
import stat
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from p11spy.decoder import render
from p11spy.decoder.events import Apdu, TraceWarning
from p11spy.decoder.formats.p11spy import entries, frames, modules, reader
from p11spy.decoder.values import (
    BOOL,
    DATE,
    MECHANISMS,
    NAMED,
    NUMBER,
    NUMBERS,
    POINTER,
    STRING,
    UNAVAILABLE,
    attribute_form,
    masked,
    name_in,
    pcsc_rv_name,
    rv_name,
    scalar_form,
    utc,
)
from p11spy.errors import UserError
from p11spy.facts import pcsc
from p11spy.facts.pkcs11 import functions
from p11spy.facts.pkcs11.model import Function, Param

LIBRARY = Path(__file__).with_name("libp11json.so")

HEADER = LIBRARY.with_name("p11json.h")  # the library's interface

# p11json.h's codes for the values' forms (values.py), read from the library's declarations
SCALAR_MODES = {NUMBER: "SM_INT", UNAVAILABLE: "SM_UNAVAIL", BOOL: "SM_BOOL",
                POINTER: "SM_PTR", NAMED: "SM_NAMED"}
VALUE_MODES = {BOOL: "AV_BOOL", NUMBER: "AV_INT", NAMED: "AV_NAMED", STRING: "AV_STRING",
               DATE: "AV_DATE", MECHANISMS: "AV_MECHS", NUMBERS: "AV_INTS"}
PCSC_BYTES_MODES = {reader.pcsc_reader_states: "BM_READER_STATES",
                    reader.pcsc_reader_names: "BM_MULTISZ"}
NO_MODULE = (1 << 64) - 1


@cache
def _library() -> tuple[Any, Any] | None:
    """cffi and the library, or None where it was not built (p11spy then decodes in Python)."""
    if not LIBRARY.is_file():
        return None
    ffi = _ffi()
    try:
        return ffi, ffi.dlopen(str(LIBRARY))
    except OSError:
        return None


def _ffi() -> Any:
    """The interface, as the build parsed it ahead (shim_build/prebuilt.py), else parsed now."""
    import hashlib

    text = HEADER.read_text()
    try:
        from p11spy.decoder.formats.p11spy import _p11json_ffi  # type: ignore[attr-defined]

        if _p11json_ffi.SOURCE == hashlib.sha256(text.encode()).hexdigest():
            return _p11json_ffi.ffi
    except ImportError:
        pass
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(text)
    return ffi


class _Tables:
    """The functions and their parameters as the C reads them: how each renders, by name."""

    def __init__(self, ffi: Any, lib: Any) -> None:
        self.lib = lib
        self.families: list[str | None] = []
        self._family_ids: dict[str | None, int] = {}
        names = bytearray()
        params: list[tuple[int, int, int, int]] = []

        def quoted(text: str) -> tuple[int, int]:
            at = len(names)
            names.extend(render.dumps(text))
            return at, len(names) - at

        def table(fns: tuple[Function, ...], is_pcsc: bool) -> Any:
            out = ffi.new("struct p11j_func[]", max(len(fns), 1))
            for i, fn in enumerate(fns):
                out[i].name_off, out[i].name_len = quoted(fn.name)
                out[i].first, out[i].count = len(params), len(fn.params)
                for p in fn.params:
                    params.append((self._mode(p, is_pcsc), self.family(p.kind),
                                   *quoted(p.name)))
            return out

        self.funcs = table(functions.FUNCTIONS, False)
        self.pfuncs = table(pcsc.FUNCTIONS, True)
        self.params = ffi.new("struct p11j_param[]", params)
        self.names = ffi.new("char[]", bytes(names))

    def family(self, name: str | None) -> int:
        if name not in self._family_ids:
            self._family_ids[name] = len(self.families)
            self.families.append(name)
        return self._family_ids[name]

    def _mode(self, p: Param, is_pcsc: bool) -> int:
        """How the C renders p's fields: the reader's decisions, in p11json.h's codes."""
        lib = self.lib
        scalar = getattr(lib, SCALAR_MODES[scalar_form(p)[0]])
        special = reader.PCSC_BYTES.get(p.name) if is_pcsc else None
        if special is not None:
            raw = getattr(lib, PCSC_BYTES_MODES[special])
        else:
            raw = lib.BM_CALLBACK if p.role in reader.BYTES_ROLES else lib.BM_HEX
        array = lib.AM_INTS if p.kind in reader.PLAIN_ARRAYS else lib.AM_NAMED
        return scalar | raw << 4 | array << 8 | \
            (lib.MODE_INOUT if p.role in reader.INOUT_ROLES else 0) | \
            (lib.MODE_TWO_CALL if p.role in reader.TWO_CALL_ROLES else 0)


@cache
def _tables(ffi: Any, lib: Any) -> _Tables:
    """Made once per process: `decode --json` of several traces reads them all with it."""
    return _Tables(ffi, lib)


class _Run:
    """One trace through the library: the callbacks, and what they hold between calls."""

    def __init__(self, ffi: Any, lib: Any, raw: BinaryIO) -> None:
        self.ffi, self.lib, self.raw = ffi, lib, raw
        self.tables = _tables(ffi, lib)
        self.error: BaseException | None = None
        self._held: Any = None  # the last answer, alive until the C has copied it
        self._module = b""
        self._module_index = NO_MODULE
        self._lookups = {lib.LK_NAME: self._name, lib.LK_RV: lambda _a, b: rv_name(b),
                         lib.LK_PCSC_RV: lambda _a, b: pcsc_rv_name(b),
                         lib.LK_INS: self._ins, lib.LK_TIME: lambda _a, b: utc(b),
                         lib.LK_DURATION: lambda _a, b: b / 1000.0,
                         lib.LK_ATTR: self._attribute, lib.LK_MASKED: self._masked_tail}
        self.callbacks = [
            ffi.callback("int(*)(int, uint64_t, uint64_t, const char **, size_t *)",
                         self._guard(self._lookup)),
            ffi.callback("int(*)(int, int, int, int, uint64_t, const uint8_t *, size_t, "
                         "const char **, size_t *)", self._guard(self._arg)),
            ffi.callback("int(*)(int, const uint8_t *, size_t, int64_t, uint64_t, uint64_t *, "
                         "const char **, size_t *)", self._guard(self._record)),
            ffi.callback("int(*)(const char *, size_t)", self._guard(self._write)),
        ]

    def conf(self) -> Any:
        c = self.ffi.new("struct p11j_conf *")
        c.lookup, c.arg, c.record, c.write = self.callbacks
        t = self.tables
        c.funcs, c.nfuncs = t.funcs, len(functions.FUNCTIONS)
        c.pfuncs, c.npfuncs = t.pfuncs, len(pcsc.FUNCTIONS)
        c.params, c.names = t.params, t.names
        c.ckm_family, c.cka_family = t.family("CKM"), t.family("CKA")
        c.max_record, c.max_fields = frames.MAX_RECORD, frames.MAX_FIELDS
        c.field_limit = reader.FIELD_LIMIT
        c.max_open, c.max_bytes = entries.MAX_OPEN, entries.MAX_BYTES
        c.parent_param, c.max_waiting = pcsc.PARENT_PARAM, entries.MAX_WAITING
        c.max_modules = modules.MAX_MODULES
        c.transmit = pcsc.BY_NAME["SCardTransmit"].index
        return c

    def _guard(self, fn: Any) -> Any:
        """A callback that never lets an exception into the C: it is kept, and the C stops."""
        def call(*args: Any) -> int:
            if self.error is not None:
                return -1
            try:
                return fn(*args)
            except BaseException as exc:  # noqa: BLE001 - raised again once the C has stopped
                self.error = exc
                return -1
        return call

    def _answer(self, data: bytes, out: Any, n: Any) -> int:
        self._held = self.ffi.from_buffer(data)
        out[0] = self.ffi.cast("const char *", self._held)
        n[0] = len(data)
        return 0

    # -- the callbacks --

    def _lookup(self, what: int, a: int, b: int, out: Any, n: Any) -> int:
        answer = self._lookups[what](a, b)
        return self._answer(answer if isinstance(answer, bytes) else render.dumps(answer),
                            out, n)

    def _attribute(self, _a: int, atype: int) -> bytes:
        """An attribute type's value mode and the family of its names."""
        form, family = attribute_form(atype)
        mode = getattr(self.lib, VALUE_MODES[form]) if form in VALUE_MODES else self.lib.AV_HEX
        return bytes([mode]) + self.tables.family(family).to_bytes(4, "little")

    @staticmethod
    def _masked_tail(cls: int, extra: int) -> bytes:
        """What follows the length in a masked value's row."""
        return render.dumps(masked(0, cls, extra))[len(b'{"masked":true,"length":0'):]

    def _name(self, family: int, value: int) -> str:
        return name_in(self.tables.families[family], value)

    @staticmethod
    def _ins(cla: int, ins: int) -> str | None:
        from p11spy.decoder.apdu import ins_name

        return ins_name(cla, ins)

    def _arg(self, is_pcsc: int, fidx: int, param: int, kind: int, declared: int, data: Any,
             size: int, out: Any, n: Any) -> int:
        size = size if is_pcsc else min(size, reader.shown(kind, declared))
        payload = self.ffi.unpack(self.ffi.cast("const char *", data), size)
        if is_pcsc:
            try:
                v = reader.pcsc_field_value(pcsc.FUNCTIONS[fidx].params[param], kind, payload)
            except reader.DAMAGED:
                return 1
        else:
            p = functions.FUNCTIONS[fidx].params[param]
            v = reader.call_field_value(p, kind, declared, payload)
        return self._answer(render.dumps(v), out, n)

    def _record(self, what: int, data: Any, size: int, seq: int, offset: int, number: Any,
                out: Any, n: Any) -> int:
        if what == self.lib.RQ_MODULE_PATH:
            number[0] = self._module_index
            return self._answer(self._module, out, n)
        rec = self.ffi.unpack(self.ffi.cast("const char *", data), size)
        if what == self.lib.RQ_PCSC:
            try:
                parent, event = reader.decode_pcsc(rec, 0, offset)
            except reader.DAMAGED as exc:
                warning = TraceWarning(seq=seq, message=f"byte {offset}: damaged PC/SC record "
                                                        f"({exc})")
                self._answer(render.row(warning), out, n)
                return 1
            event.parent = None  # type: ignore[attr-defined]
            row = render.row(event)
            tail = row[row.index(b',"parent":null') + len(b',"parent":null'):]
            number[0] = parent
            return self._answer((b'"apdu"' if isinstance(event, Apdu) else b'"pcsc"') + tail,
                                out, n)
        event, module = reader.other_record(rec, seq, offset)
        self._module_index, self._module = NO_MODULE, b""
        if module is not None and module[0] in modules.INDEXES:  # as Modules keeps them
            self._module_index = module[0]
            self._module = b',"module":' + render.dumps(module[1]) if module[1] else b""
        return self._answer(render.row(event), out, n)

    def _write(self, data: Any, size: int) -> int:
        self.raw.write(self.ffi.buffer(data, size))
        return 0


def write_jsonl(path: Path, fmt: str | None, out: TextIO) -> bool:
    """Writes the trace at path as `decode --json` does, by the compiled decoder, and says so;
    False, with nothing written, where that decoder does not take it (no library, not a
    regular file, not a p11spy trace, records that do not chain cleanly)."""
    if os.environ.get("P11SPY_DECODER") == "python":  # asked for: to compare, or distrust
        return False
    loaded = _library()
    raw = getattr(out, "buffer", None)
    if loaded is None or raw is None or fmt not in (None, "p11spy") or str(path) == "-":
        return False
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            if not reader.sniff(f.read(len(reader.MAGIC))):
                return False
            fd = f.fileno()
            out.flush()  # what was written as text goes first
            run = _Run(*loaded, raw)
            rc = loaded[1].p11j_run(run.conf(), fd, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.filename is None:  # writing the rows: as the Python path would raise it
            raise
        return False  # opening the file: the Python path says what is wrong, as for any trace
    if run.error is not None:
        raise run.error
    if rc in _FAILED:
        raise UserError(f"{path}: {_FAILED[rc]}")
    return rc == 0


_FAILED = {-2: "out of memory while decoding it",
           -3: "it could not be read to the end (did it shrink while it was read?)"}
