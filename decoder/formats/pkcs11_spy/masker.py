"""Redacts OpenSC pkcs11-spy text logs line by line, in constant memory.

Why a line machine of its own rather than the reader: the reader parses values to render them,
and forgets the text; redaction must keep the text and change only the bytes of a secret, so it
only needs to know, for each indented line, which parameter or attribute it shows. That comes
from the line before it (`[in] pPin[ulPinLen] <ptr> / 6`, `    CKA_VALUE  <ptr> / 32`) and the
function table. Templates are held until they end because their CKA_CLASS may come after their
CKA_VALUE; nothing else is held.

A masked value keeps its lines: dump rows (`    00000000  31 32 ..  12..`) get `2A` for each
byte and `*` in the ASCII column, print_print rows (`    61657331` / `     a e s 1`) alike.
CKA_VALUE of C_GetAttributeValue is masked unless an earlier call showed the object is no
secret or private key (CKA_CLASS read back, or the class of the template that made it), as
the shim decides at capture; what is known of objects is forgotten at each spy banner.
"""

from __future__ import annotations

import re
from typing import BinaryIO

from p11spy.decoder.formats.pkcs11_spy.grammar import (
    BANNER,
    FUNCTION_ALIASES,
    PARAMS,
    mark_redacted,
)
from p11spy.decoder.masking import (
    HIDDEN_PIN_LENGTH,
    IDENTIFYING,
    MARK_CHAR,
    MARK_HEX,
    Finding,
    Options,
    Report,
    attribute_is_secret,
    is_key_class,
)
from p11spy.decoder.masking.lines import _BLOCK_END, Lookout, Word, chunks, run, split_eol
from p11spy.facts.pkcs11 import attributes, functions
from p11spy.facts.pkcs11.constants import CKA, CKO
from p11spy.facts.pkcs11.model import Function, Param, Role

_HEADER = re.compile(r"(\d+): (\w+)\s*$")
_SPEC = re.compile(r" ([0-9A-Fa-f]+) / (-?\d+)\s*$")
_NAME = re.compile(r"\*?(\w+)")
_HEX2 = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{2}(?![0-9A-Fa-f])")
_HEXDIGITS = re.compile(r"[0-9A-Fa-f]{2}")
_NONSPACE = re.compile(r"\S")
_QUOTED = re.compile(r"'([^']*)'")
_TEMPLATES = frozenset({Role.TEMPLATE_IN, Role.TEMPLATE_INOUT})
# Names of parameters that no known function explains, read as a PIN or a template in doubt.
_DOUBTFUL_PIN = re.compile(r"Pin\b|Pin$|PIN|[Pp]assword")
_DOUBTFUL_TEMPLATE = re.compile(r"Template$")
_LABEL = re.compile(r"CKA_[A-Za-z0-9_]+")
_JUNK = "".join(map(chr, [*range(0, 9), *range(14, 32), 127]))  # bytes that are no text
_GLUED_ROW = re.compile(r" / -?\d+(    [0-9A-Fa-f]{8}  .*)$")
_BUFFER = re.compile(r"\*?\w+\[\w*\] ")  # "pPin[ulPinLen] <pointer> / <length>"
_PUBLIC = CKO.value_of("CKO_PUBLIC_KEY")
_PRIVATE = CKO.value_of("CKO_PRIVATE_KEY")
# Info struct lines that identify a device (--strict): "      label:   'fixture   '".
_STRICT_FIELDS = ("label:", "serialNumber:", "slotDescription:")
# Lines the machine must see (see redact_lines); all others pass unread unless --strict.
_LOOKS = [Word(": C_"), Word(": SetOperationState"), Word(BANNER), Word("P:", r"\d+; T:"),
          Word("Pin["), Word("Template["), Word("hObject = "),
          Word("[out] ", r"\*?p?h\w* = ")]


def mask_row(row: str) -> str:
    """One line of a value's dump with every byte shown replaced by the marker."""
    if len(row) > 14 and row[12:14] == "  " and row[4:12].strip("0123456789ABCDEFabcdef") == "":
        hexpart = row[14:62]
        n = len(_HEX2.findall(hexpart))
        out = row[:14] + _HEX2.sub(MARK_HEX, hexpart)
        if len(row) > 63:
            tail = row[63:]
            out += row[62] + MARK_CHAR * min(n, len(tail)) + tail[n:]
        else:
            out += row[62:]
        return out
    body = row.lstrip(" ")
    indent = row[:len(row) - len(body)]
    if body.startswith("DN: "):
        return indent + "DN: " + _NONSPACE.sub(MARK_CHAR, body[4:])
    if len(indent) == 4 and body and body.replace(" ", "").strip("0123456789ABCDEFabcdef") == "":
        return indent + _HEXDIGITS.sub(MARK_HEX, body)  # print_print's hex groups
    return indent + _NONSPACE.sub(MARK_CHAR, body)  # its characters, or anything else


def pin_row(n: int) -> str:
    """The dump row of n marker bytes (n <= 16), as print_generic writes it."""
    hexpart = (MARK_HEX + " ") * n
    return f"    00000000  {hexpart:<48} {MARK_CHAR * n:<16}"


def _handle(text: str) -> int | None:
    v = text.strip()
    try:
        return int(v, 16) if v[:2] in ("0x", "0X") else int(v)
    except ValueError:
        return None


class _Line:
    __slots__ = ("no", "text", "eol")

    def __init__(self, no: int, text: str, eol: str) -> None:
        self.no, self.text, self.eol = no, text, eol


class _Redactor:
    def __init__(self, opts: Options, report: Report) -> None:
        self.out: list[str] = []
        self.interest = None if opts.strict else Lookout(_LOOKS)
        self.opts = opts
        self.report = report
        self.fn: Function | None = None
        self.pmap: dict[str, Param] = {}
        self.pid: int | None = None
        self.handle: int | None = None
        self.created: int | None = None  # class given by the call's template
        self.objects: dict[tuple[int | None, int], int] = {}
        self.rows: str | None = None  # what the value rows that follow hold, if secret
        self.pin: list[_Line] | None = None  # PIN rows held (for --hide-lengths)
        self.pin_spec: _Line | None = None
        self.template: list[_Line] | None = None
        self.tparam: Param | None = None
        self.struct = False  # inside an info struct whose labels --strict masks
        self.struct_field = False  # the line before continues a masked field
        self.call_id: int | None = None  # the fast path's name for the current call

    def emit(self, line: _Line, text: str, what: str | None = None) -> None:
        if what is not None and text != line.text:
            self.report(Finding(f"line {line.no}", what))
        self.out.append(text + line.eol)

    def busy(self) -> bool:
        """Inside a value, template or struct: the next line must be seen."""
        return self.rows is not None or self.template is not None or self.struct

    def line(self, no: int, text: str, eol: str) -> None:
        line = _Line(no, text, eol)
        s = text
        c = s.lstrip(_JUNK)[:1]  # (NULs before an indented line leave it indented)
        if self.template is not None:
            if c == " ":
                self.template.append(line)
                return
            self.end_template()
        if c == " " and self.rows is not None:
            if self.pin is not None:
                self.pin.append(line)
            else:
                self.emit(line, mask_row(s), self.rows)
            return
        if c == " " and self.struct:
            self.struct_line(line)
            return
        self.end_rows()
        self.struct = False
        if c == "[":
            k = s.find("[out] ", 1)
            if k > 0:  # 0.23 glues "[in] type = %s" and "[out] pInfo:" into one line
                self.param(line, s[:k], done=False)
                self.param(line, s[k:], prefix=s[:k])
            else:
                self.param(line, s)
            return
        m = _HEADER.match(s) if "0" <= c <= "9" else None
        if m:
            name = FUNCTION_ALIASES.get(m.group(2), m.group(2))
            self.fn = functions.BY_NAME.get(name)
            self.pmap = PARAMS.get(name, {})
            self.handle = self.created = None
        elif c == "P" and s.startswith("P:"):
            pid = s[2:s.find(";")]
            self.pid = int(pid) if pid.isascii() and pid.isdigit() else None
        elif c == "*" and BANNER in s:
            self.objects.clear()
            self.pid = None
            s = mark_redacted(s)
        elif c == "L" and s.startswith("Loaded:") and self.opts.strict:
            self.emit(line, s[:7] + _mask_path(s[7:]), "module path (identifying)")
            return
        self.emit(line, s)

    # -- parameters ---------------------------------------------------------------------------

    def param(self, line: _Line, s: str, done: bool = True, prefix: str = "") -> None:
        """An "[in] ..." / "[out] ..." line (or part of a glued one)."""
        phase_out = s.startswith("[out] ")
        rest = s[6:] if phase_out else s[5:] if s.startswith("[in] ") else ""
        m = _NAME.match(rest)
        p = self.pmap.get(m.group(1)) if m else None
        text = s
        what = None
        if (p is None or self.fn is None) and m:
            self.doubt(m.group(1), rest)
        elif p is not None and self.fn is not None:
            fn = self.fn.name
            spec = _SPEC.search(rest)
            if p.role in _TEMPLATES and rest.rstrip().endswith(":"):
                self.template, self.tparam = [], p
            elif p.role is Role.PIN and (spec or _BUFFER.match(rest)):
                # (a buffer whose pointer and length do not read is a PIN all the same, and
                # a dump row glued to it by a lost newline is masked as one)
                self.rows = f"{fn} {p.name} (PIN)"
                glued = _GLUED_ROW.search(s)
                if glued:
                    text = s[:glued.start(1)] + mask_row(glued.group(1))
                    what = self.rows if text != s else None
                if self.opts.hide_lengths:
                    self.pin, self.pin_spec = [], None
                    n = int(spec.group(2)) if spec else 0
                    if n > 0:
                        text = s[:len(s) - len(rest) + spec.start(2)] + str(HIDDEN_PIN_LENGTH) \
                            + rest[spec.end(2):]
                        what = self.rows
            elif spec and self.opts.strict and (p.name == "pUsername" or
                                                (p.name == "pLabel" and fn == "C_InitToken")):
                self.rows = f"{fn} {p.name} (identifying)"
            elif p.name == "hObject" and "=" in rest:
                self.handle = _handle(rest.split("=", 1)[1])
            elif phase_out and p.role is Role.HANDLE_OUT and p.kind == "object" and "=" in rest:
                self.created_object(p, _handle(rest.split("=", 1)[1]))
            elif p.role is Role.STRUCT_OUT and self.opts.strict and \
                    p.struct in ("CK_TOKEN_INFO", "CK_SLOT_INFO"):
                self.struct = True
        if done:
            self.emit(line, prefix + text, what)

    def doubt(self, name: str, rest: str) -> None:
        """A parameter of a function this version does not know (or of none: the call's header
        line is damaged or missing): when in doubt, a PIN-like name's value rows are masked
        as a PIN's, and a template is read as one whose object may be a key."""
        fn = self.fn.name if self.fn else "?"
        if _DOUBTFUL_PIN.search(name) and (_SPEC.search(rest) or _BUFFER.match(rest)):
            self.rows = f"{fn} {name} (PIN)"
        elif _DOUBTFUL_TEMPLATE.search(name) and rest.rstrip().endswith(":"):
            self.template, self.tparam = [], None

    def created_object(self, p: Param, handle: int | None) -> None:
        if handle is None or self.fn is None:
            return
        if p.name == "phPublicKey":
            cls: int | None = _PUBLIC
        elif p.name == "phPrivateKey" or (self.created is None and self.fn.name in (
                "C_GenerateKey", "C_UnwrapKey", "C_DeriveKey")):
            cls = _PRIVATE  # some key: masked alike
        else:
            cls = self.created
        if cls is not None:
            self.objects[(self.pid, handle)] = cls

    def end_rows(self) -> None:
        if self.pin is not None:
            held, self.pin = self.pin, None
            if held:
                new = [pin_row(HIDDEN_PIN_LENGTH)]
                if [h.text for h in held] != new:
                    self.report(Finding(f"line {held[0].no}", self.rows or "PIN"))
                self.out.append(new[0] + held[0].eol)
        self.rows = None

    def struct_line(self, line: _Line) -> None:
        s = line.text
        label = s.strip().split(" ", 1)[0]
        if label in _STRICT_FIELDS or (self.struct_field and s.strip().startswith("'")):
            self.struct_field = True
            new = _QUOTED.sub(lambda m: "'" + MARK_CHAR * len(m.group(1).rstrip()) +
                              m.group(1)[len(m.group(1).rstrip()):] + "'", s)
            self.emit(line, new, f"{self.fn.name if self.fn else '?'} {label.rstrip(':')} "
                                 f"(identifying)")
            return
        self.struct_field = False
        self.emit(line, s)

    # -- templates ----------------------------------------------------------------------------

    def end_template(self) -> None:
        lines, p = self.template or [], self.tparam
        self.template = self.tparam = None
        entries: list[tuple[_Line, int | None, str, list[_Line]]] = []
        for ln in lines:
            if ln.text.startswith("    CK"):
                head = ln.text[4:]
                if head.startswith("CKA_? ("):
                    j = head.find(")") + 1
                else:
                    j = head.find(" ")
                    j = len(head) if j < 0 else j
                entries.append((ln, _attr_type(head[:j]), head[j:].strip(), []))
            elif entries:
                entries[-1][3].append(ln)
            else:
                self.emit(ln, ln.text)
        cls = next((_class_value(v) for _l, t, v, _r in entries if t == _CLASS), None)
        sensitive = any(t == _SENSITIVE and v == "True" for _l, t, v, _r in entries)
        fn = self.fn.name if self.fn else "?"
        keyctx = self.key_context(p, cls, sensitive)
        for head, atype, _value, rows in entries:
            self.emit(head, head.text)
            why = attribute_is_secret(atype, keyctx, self.opts.strict) if atype is not None \
                else None
            what = f"{fn} {CKA.name_of(atype)} ({why})" if why and atype is not None else None
            for r in rows:
                self.emit(r, mask_row(r.text) if what else r.text, what)

    def key_context(self, p: Param | None, cls: int | None, sensitive: bool) -> bool | None:
        """Whether a template's object is (or may be, None) a secret or private key, as the
        shim decides; remembers what the template says of its object."""
        fn = self.fn.name if self.fn else "?"
        known = self.objects.get((self.pid, self.handle)) if self.handle is not None else None
        if p is not None and p.role is Role.TEMPLATE_INOUT:
            if cls is not None and self.handle is not None:
                self.objects[(self.pid, self.handle)] = cls
            return is_key_class(cls if cls is not None else known)
        if cls is not None or sensitive:
            self.created = cls
            return sensitive or bool(is_key_class(cls))
        if fn in ("C_SetAttributeValue", "C_CopyObject"):
            return is_key_class(known)
        return True if p is not None and p.kind == functions.KEY_TEMPLATE else None

    def wants_block(self) -> bool:
        """A template has begun and nothing of it is held yet: take its lines at once."""
        return self.template == [] and self.rows is None and not self.struct

    def block(self, no: int, text: str) -> None:
        """A template's lines, whole. Most templates hold nothing to mask: they are copied
        after a look for the attributes that matter (and for the class they say)."""
        if (_STRICT_ATTRS if self.opts.strict else _SECRET_ATTRS).search(text) is None:
            p = self.tparam
            self.template = self.tparam = None
            m = _CLASS_LINE.search(text)
            self.key_context(p, _class_value(m.group(1)) if m else None,
                             _SENSITIVE_LINE.search(text) is not None)
            self.out.append(text)
            return
        self.block_lines(no, text)

    def block_lines(self, no: int, text: str) -> None:
        for line in text.splitlines(keepends=True):
            self.line(no, *split_eol(line))
            no += 1

    def finish(self) -> None:
        if self.template is not None:
            self.end_template()
        self.end_rows()


_CLASS = CKA.value_of("CKA_CLASS")
_SENSITIVE = CKA.value_of("CKA_SENSITIVE")
# Attribute lines of a template that may need masking, from the attribute table.
_SECRET_NAMES = sorted(a.name for a in attributes.ATTRIBUTES.values()
                       if a.secret or a.secret_if_key)
_SECRET_ATTRS = re.compile(r"^    (?:" + "|".join(_SECRET_NAMES) + r")\b", re.M)
_STRICT_ATTRS = re.compile(r"^    (?:" + "|".join(sorted({*_SECRET_NAMES, *IDENTIFYING})) + r")\b",
                           re.M)
_CLASS_LINE = re.compile(r"^    CKA_CLASS +(\S+)", re.M)
_SENSITIVE_LINE = re.compile(r"^    CKA_SENSITIVE +True", re.M)


def _attr_type(name: str) -> int | None:
    """pkcs11-spy's attribute label ("CKA_VALUE", "CKA_? (0x123)", "CKA_X(abbrev)")."""
    if name.startswith("CKA_? ("):
        v = _handle(name[7:-1])
        return v
    m = _LABEL.match(name)  # (a byte of junk after it is damage, not another name)
    try:
        return CKA.value_of(m.group() if m else name)
    except KeyError:
        return None


def _class_value(text: str) -> int | None:
    try:
        return CKO.value_of(text.split()[0])
    except (KeyError, IndexError):
        return _handle(text)


def _mask_path(text: str) -> str:
    return re.sub(r"[^/\\\"' ]", MARK_CHAR, text)


def redact(fin: BinaryIO, fout: BinaryIO | None, opts: Options, report: Report,
           fast: bool = True) -> None:
    """The fast path (below) unless --strict; fast=False runs the full line machine."""
    if fast and not opts.strict:
        _redact_fast(fin, fout, opts, report)
    else:
        run(fin, fout, _Redactor(opts, report))


# --- the fast path ---------------------------------------------------------------------------
#
# Why: most lines of a pkcs11-spy log cannot hold a secret, and a log of pkcs11-tool runs has
# a call header every ten lines. Rather than follow every call, one regex pass per chunk finds
# the only lines that matter (banners, PIN parameters, secret and class attributes, handles of
# created objects); the call they belong to (function, hObject, pid) is looked up backwards
# when one is found, and the line machine above handles it. The full machine stays for
# --strict, which needs almost every line, and is what the tests compare this path against.

# Each alternative starts after a newline (a literal: the regex engine skips fast).
_INTEREST = re.compile(
    r"\n(?:(?P<banner>\*+ OpenSC PKCS#11 spy)|(?P<pin>\[in\] \w*Pin\[)"
    r"|(?P<attr>    CKA_(?:" + "|".join(n[4:] for n in [*_SECRET_NAMES, "CKA_CLASS",
                                                     "CKA_SENSITIVE"]) + r")\b)"
    r"|(?P<out>\[out\] \*?p?h\w* = ))")
# The last call header before a position: greedy, so it backtracks from there (cheap: a call
# is a few lines).
_LAST_CALL = re.compile(r"(?s).*\n(\d+): (\w+)[ \t\r]*\n")
_HOBJECT = re.compile(r"^\[in\] hObject = (\S+)", re.M)
_PID = re.compile(r"^P:(\d+);", re.M)
_TEMPLATE_HEAD = re.compile(r"\[(in|out)\] (\w+)\[[^\]]*\]:")


class _Fast:
    def __init__(self, machine: _Redactor) -> None:
        self.m = machine
        self.base = 0  # file offset of the chunk (calls are told apart by their offset)
        self.no = 0  # line number before the chunk
        self.carried: tuple[int, str, int | None, int | None] | None = None  # last call

    def call_at(self, text: str, pos: int) -> None:
        """Puts the machine in the call that line pos belongs to."""
        c = _LAST_CALL.match(text, 0, pos)
        if c is not None:
            start, name = c.start(1), c.group(2)
            h = _HOBJECT.search(text, start, pos)
            p = _PID.search(text, start, min(pos, start + 200))
            ident = self.base + start
            handle = _handle(h.group(1)) if h else None
            pid = int(p.group(1)) if p else None
        elif self.carried is not None:
            ident, name, handle, pid = self.carried
            h = _HOBJECT.search(text, 0, pos)
            handle = _handle(h.group(1)) if h else handle
        else:
            return
        m = self.m
        if m.call_id != ident:
            m.call_id = ident
            m.created = None
            name = FUNCTION_ALIASES.get(name, name)
            m.fn = functions.BY_NAME.get(name)
            m.pmap = PARAMS.get(name, {})
        m.handle = handle
        if pid is not None:
            m.pid = pid

    def chunk(self, chunk: str) -> None:
        """One chunk; text is worked on with a newline before it, so that every line, the
        first too, follows one."""
        m = self.m
        out = m.out
        text = "\n" + chunk
        size = len(text)
        pos = 1
        counted, no = 1, self.no  # lines before offset counted
        for hit in _INTEREST.finditer(text):
            start = hit.start() + 1  # the line, after its newline
            if start < pos:
                continue
            out.append(text[pos:start])
            no += text.count("\n", counted, start)
            counted = start
            here = no + 1  # this line's number
            if hit.lastgroup == "attr":
                head = text.rfind("\n[", 0, start) + 1
                tm = _TEMPLATE_HEAD.match(text, head) if head else None
                end = _BLOCK_END.search(text, start)
                stop = end.end() if end else size
                self.call_at(text, start)
                p = m.pmap.get(tm.group(2)) if tm else None
                head_end = text.find("\n", head)
                known = p is not None and p.role in _TEMPLATES and m.fn is not None
                doubtful = tm is not None and (p is None or m.fn is None) and \
                    _DOUBTFUL_TEMPLATE.search(tm.group(2)) is not None
                inside = (known or doubtful) and 0 <= head_end < start and \
                    _BLOCK_END.search(text, head_end + 1, start - 1) is None
                if inside:
                    m.template, m.tparam = [], p
                    m.block_lines(here, text[start:stop])
                    m.end_template()
                else:
                    out.append(text[start:stop])  # not inside a template this path knows
                pos = stop
                continue
            end = text.find("\n", start)
            stop = size if end < 0 else end + 1
            if hit.lastgroup in ("pin", "out"):
                self.call_at(text, start)
            m.line(here, *split_eol(text[start:stop]))
            if hit.lastgroup == "pin" and m.rows is not None:
                rows = _BLOCK_END.search(text, stop - 1)
                rstop = rows.end() if rows else size
                m.block_lines(here + 1, text[stop:rstop])
                m.end_rows()
                stop = rstop
            m.rows = None
            pos = stop
        out.append(text[pos:])
        last = _LAST_CALL.match(text)
        if last is not None:
            start = last.start(1)
            h = _HOBJECT.search(text, start)
            p = _PID.search(text, start, start + 200)
            self.carried = (self.base + start, last.group(2),
                            _handle(h.group(1)) if h else None,
                            int(p.group(1)) if p else m.pid)
        self.base += len(chunk)
        self.no += chunk.count("\n")


def _redact_fast(fin: BinaryIO, fout: BinaryIO | None, opts: Options, report: Report) -> None:
    m = _Redactor(opts, report)
    fast = _Fast(m)
    for text in chunks(fin, whole_blocks=True):
        fast.chunk(text)
        if fout is not None:
            fout.write("".join(m.out).encode("latin-1"))
        m.out.clear()
