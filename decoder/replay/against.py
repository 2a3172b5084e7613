"""`p11spy replay --against MODULE TRACE`: the recorded calls re-issued against another module.

A regression test made of real traffic: each recorded call of the client is made again, in
order, with its recorded inputs, against MODULE (new firmware, a new OpenSC, SoftHSM in a lab),
and every answer is compared with the recorded one. Handles are mapped: the slot, session and
object handles MODULE hands out stand in for the recorded ones wherever the recording used
them. Arguments are built from each parameter's role (facts/pkcs11/functions.py), as the shim
recorded them.

The calls go through the shim, which records them as it records any client's; compared.py
then compares each with its recorded call as `p11spy diff` does. When an operation's Init call
fails now, the calls of that operation are not made (they would only fail for that reason)
and are reported as following from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p11spy.decoder.formats.p11spy import frames
from p11spy.decoder.replay.script import Recorded, Recording
from p11spy.errors import UserError
from p11spy.facts.logformat import MASKED, MECHANISM, Kind, Phase
from p11spy.facts.pkcs11 import constants, functions, structs
from p11spy.facts.pkcs11.model import Function, Param, Role

CKR = constants.FAMILIES["CKR"]
CKU_SO = constants.FAMILIES["CKU"].value_of("CKU_SO")
ENTRY_POINTS = {"C_GetFunctionList", "C_GetInterfaceList", "C_GetInterface"}
CK_UNAVAILABLE = 2**64 - 1


class Unplayable(Exception):
    """A recorded input that cannot be given again (masked key material, a large buffer kept
    only as a digest, a callback)."""


@dataclass
class Field:
    kind: int
    data: bytes


def _fields(blob: bytes, phase: int) -> dict[int, Field]:
    out: dict[int, Field] = {}
    for param, ph, kind, _flags, off, n in frames.fields(blob, -frames.MIN_RECORD):
        if ph == phase:
            out[param] = Field(kind, blob[off:off + n])
    return out


def _u64(b: bytes, off: int = 0) -> int:
    return int.from_bytes(b[off:off + 8], "little")


def _operations() -> dict[str, str]:
    """Each call of a multi-part operation -> the Init call that starts it (C_Sign ->
    C_SignInit), from the function table."""
    names = {fn.name for fn in functions.FUNCTIONS}
    out: dict[str, str] = {}
    for name in names:
        if name.endswith("Init") and name not in ("C_InitToken", "C_InitPIN"):
            op = name[:-len("Init")]
            for dep in (op, f"{op}Update", f"{op}Final"):
                if dep in names:
                    out[dep] = name
    return out


OPERATION_OF = _operations()


def _mechanism_structs() -> dict[int, str]:
    """Mechanism type -> the struct of its parameter whose pointers the shim follows."""
    ckm = constants.FAMILIES["CKM"]
    out: dict[int, str] = {}
    for s in structs.STRUCTS.values():
        for m in s.mechanisms:
            out.setdefault(ckm.value_of(m), s.name)
    return out


@dataclass
class Outcome:
    """One re-issued call: the recorded and the new answer."""

    recorded: Recorded
    rv: int | None = None  # None: not made
    note: str = ""  # why it was not made
    follows: int | None = None  # not made: the seq of the recorded Init call that now fails

    @property
    def failed(self) -> bool:
        return self.rv is not None and self.rv != self.recorded.rv


class Player:
    """Makes the recorded calls against one module, mapping handles as it goes."""

    def __init__(self, module: str, pin: str | None, so_pin: str | None) -> None:
        import cffi  # only this command needs it at run time

        from p11spy.facts.pkcs11.cdecl import function_list_cdef

        self.ffi = ffi = cffi.FFI()
        ffi.cdef(function_list_cdef())
        ffi.cdef("CK_RV C_GetFunctionList(void **);")
        ffi.cdef("CK_RV C_GetInterface(CK_UTF8CHAR *, CK_VERSION *, CK_INTERFACE **, CK_FLAGS);")
        try:
            self.lib = ffi.dlopen(module)
        except OSError as exc:
            raise UserError(f"cannot load {module}: {exc}") from exc
        pp = ffi.new("void **")
        try:
            rv = self.lib.C_GetFunctionList(pp)
        except AttributeError as exc:
            raise UserError(f"{module} is not a PKCS#11 module (no C_GetFunctionList)") from exc
        if rv != 0 or pp[0] == ffi.NULL:
            raise UserError(f"{module}: C_GetFunctionList answered {CKR.name_of(rv)}")
        self.list = ffi.cast("P11_FUNCTION_LIST_3_2 *", pp[0])
        self.since = {"2.40"}  # the slots C_GetFunctionList's list surely has
        self._interface(ffi)
        self.pins = {"user": pin, "so": so_pin}
        self.handles: dict[tuple[str, int], int] = {}
        self.keep: list[Any] = []  # what must live until the call returns
        self.mech_structs = _mechanism_structs()

    def _interface(self, ffi) -> None:
        """The module's "PKCS 11" interface, where it has one: the 3.x functions are only
        surely in that list (C_GetFunctionList's may be 2.x-sized whatever its version)."""
        try:
            get = self.lib.C_GetInterface
        except AttributeError:
            return
        out = ffi.new("CK_INTERFACE **")
        if get(ffi.new("char[]", b"PKCS 11"), ffi.NULL, out, 0) != 0 or out[0] == ffi.NULL \
                or out[0].pFunctionList == ffi.NULL:
            return
        self.list = ffi.cast("P11_FUNCTION_LIST_3_2 *", out[0].pFunctionList)
        v = self.list.version
        self.since |= ({"3.0"} if v.major >= 3 else set()) | \
            ({"3.2"} if (v.major, v.minor) >= (3, 2) else set())

    # ---- inputs -------------------------------------------------------------------------

    def handle(self, p: Param, value: int) -> int:
        return self.handles.get((p.kind or "", value), value)

    def buf(self, data: bytes):
        b = self.ffi.new("CK_BYTE[]", max(len(data), 1))
        self.ffi.memmove(b, data, len(data))
        self.keep.append(b)
        return b

    def bytes_of(self, f: Field | None, what: str):
        if f is None or f.kind == Kind.NULL:
            return self.ffi.NULL
        if f.kind in (Kind.BYTES, Kind.STRUCT):
            return self.buf(f.data)
        if f.kind == Kind.CSTRING:
            return self.buf(f.data + b"\0")
        raise Unplayable(f"{what} was not recorded whole ({Kind(f.kind).name.lower()})")

    def pin_of(self, fn: Function, f: Field | None, fin: dict[int, Field]):
        redacted = f is not None and f.kind == Kind.BYTES and f.data and \
            f.data == b"*" * len(f.data)
        if f is None or (f.kind != Kind.MASKED and not redacted):
            return self.bytes_of(f, "the PIN")
        who = "so" if fn.name == "C_InitToken" or (
            fn.name == "C_Login" and 1 in fin and _u64(fin[1].data) == CKU_SO) else "user"
        pin = self.pins[who]
        if pin is None:
            raise Unplayable(f"the recorded {who.upper()} PIN is masked: give "
                             f"--{'so-pin' if who == 'so' else 'pin'}")
        length = len(f.data) if redacted else MASKED.unpack_from(f.data)[0]
        if len(pin.encode()) != length:
            raise Unplayable(f"the recorded PIN has {length} bytes, the PIN given "
                             f"{len(pin.encode())}")
        return self.buf(pin.encode())

    def template(self, f: Field | None, with_values: bool):
        if f is None or f.kind == Kind.NULL:
            return self.ffi.NULL
        if f.kind != Kind.TEMPLATE:
            raise Unplayable("a template not recorded whole")
        attrs = list(frames.attributes(f.data))
        arr = self.ffi.new("CK_ATTRIBUTE[]", max(len(attrs), 1))
        self.keep.append(arr)
        for i, (atype, alen, vkind, start, end) in enumerate(attrs):
            arr[i].type = atype
            arr[i].ulValueLen = alen
            if vkind == Kind.NULL:
                arr[i].pValue = self.ffi.NULL
            elif not with_values:  # room offered for the value
                arr[i].pValue = self.buf(bytes(alen if alen != CK_UNAVAILABLE else 0))
            elif vkind == Kind.BYTES:
                arr[i].pValue = self.buf(f.data[start:end])
            else:
                raise Unplayable(f"attribute 0x{atype:x} was not recorded whole")
        return arr

    def mechanism(self, f: Field | None):
        if f is None or f.kind == Kind.NULL:
            return self.ffi.NULL
        mtype, plen, pkind, n = MECHANISM.unpack_from(f.data)
        payload = f.data[MECHANISM.size:MECHANISM.size + n]
        m = self.ffi.new("CK_MECHANISM *")
        self.keep.append(m)
        m.mechanism = mtype
        m.ulParameterLen = plen
        if pkind == Kind.NULL:
            m.pParameter = self.ffi.NULL
        elif pkind == Kind.BYTES:
            m.pParameter = self.buf(payload)
        elif pkind == Kind.STRUCT and mtype in self.mech_structs:
            name = self.mech_structs[mtype]
            size = self.ffi.sizeof(name)
            raw = self.buf(payload[:size])
            for fp, bkind, start, end in frames.struct_blobs(name, payload, size):
                if bkind == Kind.NULL:
                    ptr = self.ffi.NULL
                elif bkind == Kind.BYTES:
                    ptr = self.buf(payload[start:end])
                else:
                    raise Unplayable(f"the mechanism's {fp.name} was not recorded whole")
                slot = self.ffi.cast("void **", raw + self.ffi.offsetof(name, fp.name))
                slot[0] = ptr
            m.pParameter = raw
        else:
            raise Unplayable("the mechanism's parameter was not recorded whole")
        return m

    def args(self, fn: Function, fin: dict[int, Field]) -> list:
        """The call's arguments, built from its recorded in-fields by role."""
        ffi = self.ffi
        out: list = []
        saved: dict[str, Any] = {}
        for i, p in enumerate(fn.params):
            f = fin.get(i)
            r = p.role
            if r is Role.HANDLE:
                out.append(self.handle(p, _u64(f.data)) if f else 0)
            elif r in (Role.ULONG, Role.ENUM, Role.FLAGS, Role.LENGTH, Role.BOOL):
                out.append(_u64(f.data) if f else 0)
            elif r is Role.POINTER:
                if f and _u64(f.data):
                    raise Unplayable(f"{p.name} was a pointer of the client's (a callback)")
                out.append(ffi.NULL)
            elif r in (Role.BYTES_IN, Role.BYTES_INOUT, Role.TEXT_FIXED, Role.CSTRING,
                       Role.STRUCT_IN):
                out.append(self.bytes_of(f, p.name))
            elif r is Role.PIN:
                out.append(self.pin_of(fn, f, fin))
            elif r is Role.LENGTH_PTR:
                if f is not None and f.kind == Kind.NULL:
                    out.append(ffi.NULL)
                else:
                    cell = ffi.new("CK_ULONG *", _u64(f.data) if f else 0)
                    self.keep.append(cell)
                    saved[p.name] = cell
                    out.append(cell)
            elif r is Role.TEMPLATE_IN:
                out.append(self.template(f, True))
            elif r is Role.TEMPLATE_INOUT:
                out.append(self.template(f, False))
            elif r is Role.MECHANISM:
                out.append(self.mechanism(f))
            elif r is Role.INIT_ARGS:
                if f is None or f.kind == Kind.NULL:
                    out.append(ffi.NULL)
                else:
                    ia = ffi.new("CK_C_INITIALIZE_ARGS *")
                    ia.flags = _u64(f.data, ffi.offsetof("CK_C_INITIALIZE_ARGS", "flags"))
                    self.keep.append(ia)
                    out.append(ia)
            else:
                out.append(self.output(fn, p, f, fin, saved))
        return out

    def output(self, fn: Function, p: Param, f: Field | None, fin: dict[int, Field],
               saved: dict[str, Any]):
        """Room for an output, as much as the recorded client offered (NULL where it was)."""
        ffi = self.ffi
        if f is not None and f.kind == Kind.NULL:
            return ffi.NULL
        r = p.role
        if r in (Role.HANDLE_OUT, Role.ULONG_OUT):
            cell = ffi.new("CK_ULONG *")
        elif r is Role.STRUCT_OUT:
            cell = ffi.new(f"{p.struct} *")
        elif r is Role.BYTES_OUT:
            cell = ffi.new("CK_BYTE[]", max(self._room(fn, p, fin), 1))
        elif r is Role.BYTES_OUT_FIXED:
            n = _u64(fin[_param_index(fn, p.length)].data)
            cell = ffi.new("CK_BYTE[]", max(n, 1))
        elif r is Role.ARRAY_OUT:
            cell = ffi.new("CK_ULONG[]", max(self._room(fn, p, fin), 1))
        else:
            raise Unplayable(f"{p.name} ({r.value}) cannot be asked again")
        self.keep.append(cell)
        return cell

    @staticmethod
    def _room(fn: Function, p: Param, fin: dict[int, Field]) -> int:
        name = p.capacity or p.length
        f = fin.get(_param_index(fn, name))
        return _u64(f.data) if f and f.kind == Kind.ULONG else 0

    # ---- outputs ------------------------------------------------------------------------

    def map_handles(self, fn: Function, args: list, fout: dict[int, Field]) -> None:
        """Maps the handles the call handed out onto the recorded ones."""
        ffi = self.ffi
        for i, p in enumerate(fn.params):
            f = fout.get(i)
            a = args[i]
            if f is None or not isinstance(a, ffi.CData) or a == ffi.NULL:
                continue
            if p.role is Role.HANDLE_OUT and f.kind == Kind.ULONG:
                self.handles[(p.kind or "", _u64(f.data))] = a[0]
            elif p.role is Role.ARRAY_OUT and f.kind == Kind.ULONG_ARRAY and p.kind in (
                    "slot", "object"):
                rec = [_u64(f.data, k) for k in range(0, len(f.data), 8)]
                for k, old in enumerate(rec[:self._count(fn, args)]):
                    self.handles[(p.kind, old)] = a[k]

    def _count(self, fn: Function, args: list) -> int:
        for i, p in enumerate(fn.params):
            if p.role is Role.LENGTH_PTR and args[i] != self.ffi.NULL:
                return int(args[i][0])
        return 0

    # ---- one call -----------------------------------------------------------------------

    def play(self, fn: Function, call: Recorded) -> Outcome:
        out = Outcome(call)
        if fn.since not in self.since:
            out.note = f"the module's function list ({self.list.version.major}." \
                       f"{self.list.version.minor}) has no {fn.name}"
            return out
        fin = _fields(call.fields_in, Phase.IN)
        self.keep = []
        try:
            args = self.args(fn, fin)
        except Unplayable as exc:
            out.note = f"not made: {exc}"
            return out
        out.rv = int(getattr(self.list, fn.name)(*args))
        if out.rv == call.rv:
            self.map_handles(fn, args, _fields(call.fields_out, Phase.OUT))
        return out


def _param_index(fn: Function, name: str | None) -> int:
    return [p.name for p in fn.params].index(name or "")


def _session_of(fn: Function, call: Recorded) -> int | None:
    fin = _fields(call.fields_in, Phase.IN)
    for i, p in enumerate(fn.params):
        if p.role is Role.HANDLE and p.kind == "session" and i in fin:
            return _u64(fin[i].data)
    return None


@dataclass
class Played:
    """What a re-issue gives: one Outcome per recorded call but the entry points, and the
    handles the module handed out for the recorded ones ((kind, recorded) -> new)."""

    outcomes: list[Outcome]
    handles: dict[tuple[str, int], int]


def run(rec: Recording, module: str, *, pin: str | None = None, so_pin: str | None = None,
        load: str | None = None) -> Played:
    """Re-issues the recording against module. load: what to load for it (the shim in front
    of module, which records the calls made, so that they are compared as `p11spy diff`
    compares two runs)."""
    player = Player(load or module, pin, so_pin)
    by_name = {fn.name: fn for fn in functions.FUNCTIONS}
    broken: dict[tuple[int | None, str], int] = {}  # (session, Init function) -> its seq
    outcomes: list[Outcome] = []
    for call in rec.calls:
        if call.function in ENTRY_POINTS:
            continue
        fn = by_name[call.function]
        session = _session_of(fn, call)
        init = OPERATION_OF.get(call.function)
        if init and (session, init) in broken:
            outcomes.append(Outcome(call, follows=broken[(session, init)]))
            continue
        out = player.play(fn, call)
        outcomes.append(out)
        if out.failed and call.function in OPERATION_OF.values():
            broken[(session, call.function)] = call.seq
    return Played(outcomes, player.handles)
