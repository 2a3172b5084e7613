"""A few PC/SC calls through libpcsclite with ctypes (no pyscard dependency).

Why: the station must see when pcscd reports our card present or absent (faster and more exact
than polling `opensc-tool -l`), and tests sometimes want to send an APDU through the real stack.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from dataclasses import dataclass

SCARD_SCOPE_SYSTEM = 2
SCARD_SHARE_SHARED = 2
SCARD_PROTOCOL_T0 = 1
SCARD_PROTOCOL_T1 = 2
SCARD_LEAVE_CARD = 0
SCARD_STATE_UNAWARE = 0x0
SCARD_STATE_EMPTY = 0x10
SCARD_STATE_PRESENT = 0x20
SCARD_E_TIMEOUT = 0x8010000A
SCARD_E_NO_READERS_AVAILABLE = 0x8010002E
SCARD_E_NO_SERVICE = 0x8010001D

# pcsc-lite on Linux: DWORD is unsigned long, SCARDCONTEXT/SCARDHANDLE are long.
DWORD = ctypes.c_ulong
LONG = ctypes.c_long


class ReaderState(ctypes.Structure):
    _fields_ = [("szReader", ctypes.c_char_p), ("pvUserData", ctypes.c_void_p),
                ("dwCurrentState", DWORD), ("dwEventState", DWORD),
                ("cbAtr", DWORD), ("rgbAtr", ctypes.c_ubyte * 33)]


class IoRequest(ctypes.Structure):
    _fields_ = [("dwProtocol", DWORD), ("cbPciLength", DWORD)]


class PcscError(Exception):
    def __init__(self, call: str, rv: int):
        super().__init__(f"{call} failed: 0x{rv & 0xFFFFFFFF:08X}")
        self.rv = rv & 0xFFFFFFFF


def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcsclite") or "libpcsclite.so.1"
    lib = ctypes.CDLL(name)
    lib.SCardEstablishContext.argtypes = [DWORD, ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.POINTER(LONG)]
    lib.SCardReleaseContext.argtypes = [LONG]
    lib.SCardListReaders.argtypes = [LONG, ctypes.c_char_p, ctypes.c_char_p,
                                     ctypes.POINTER(DWORD)]
    lib.SCardGetStatusChange.argtypes = [LONG, DWORD, ctypes.POINTER(ReaderState), DWORD]
    lib.SCardConnect.argtypes = [LONG, ctypes.c_char_p, DWORD, DWORD, ctypes.POINTER(LONG),
                                 ctypes.POINTER(DWORD)]
    lib.SCardDisconnect.argtypes = [LONG, DWORD]
    lib.SCardTransmit.argtypes = [LONG, ctypes.POINTER(IoRequest), ctypes.c_char_p, DWORD,
                                  ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(DWORD)]
    for f in ("SCardEstablishContext", "SCardReleaseContext", "SCardListReaders",
              "SCardGetStatusChange", "SCardConnect", "SCardDisconnect", "SCardTransmit"):
        getattr(lib, f).restype = LONG
    return lib


@dataclass
class ReaderStatus:
    name: str
    present: bool
    atr: bytes


class Context:
    """An SCardContext; use as a context manager. Raises PcscError if pcscd is not there."""

    def __init__(self) -> None:
        self.lib = _lib()
        self.handle = LONG()
        rv = self.lib.SCardEstablishContext(SCARD_SCOPE_SYSTEM, None, None,
                                            ctypes.byref(self.handle))
        if rv:
            raise PcscError("SCardEstablishContext", rv)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lib.SCardReleaseContext(self.handle)

    def readers(self) -> list[str]:
        size = DWORD()
        rv = self.lib.SCardListReaders(self.handle, None, None, ctypes.byref(size))
        if rv & 0xFFFFFFFF == SCARD_E_NO_READERS_AVAILABLE:
            return []
        if rv:
            raise PcscError("SCardListReaders", rv)
        buf = ctypes.create_string_buffer(size.value)
        rv = self.lib.SCardListReaders(self.handle, None, buf, ctypes.byref(size))
        if rv & 0xFFFFFFFF == SCARD_E_NO_READERS_AVAILABLE:
            return []
        if rv:
            raise PcscError("SCardListReaders", rv)
        return [r.decode() for r in buf.raw[:size.value].split(b"\0") if r]

    def status(self, reader: str) -> ReaderStatus:
        state = ReaderState(reader.encode(), None, SCARD_STATE_UNAWARE, 0, 0)
        rv = self.lib.SCardGetStatusChange(self.handle, 0, ctypes.byref(state), 1)
        if rv and rv & 0xFFFFFFFF != SCARD_E_TIMEOUT:
            raise PcscError("SCardGetStatusChange", rv)
        return ReaderStatus(reader, bool(state.dwEventState & SCARD_STATE_PRESENT),
                            bytes(state.rgbAtr[:state.cbAtr]))

    def transmit(self, reader: str, apdus: list[bytes]) -> list[bytes]:
        """Connect (shared, T=1), send each APDU, disconnect leaving the card as it is."""
        card, proto = LONG(), DWORD()
        rv = self.lib.SCardConnect(self.handle, reader.encode(), SCARD_SHARE_SHARED,
                                   SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, ctypes.byref(card),
                                   ctypes.byref(proto))
        if rv:
            raise PcscError("SCardConnect", rv)
        try:
            pci = IoRequest(proto.value, ctypes.sizeof(IoRequest))
            out = []
            for apdu in apdus:
                buf = ctypes.create_string_buffer(65538)
                n = DWORD(len(buf))
                rv = self.lib.SCardTransmit(card, ctypes.byref(pci), apdu, len(apdu), None,
                                            buf, ctypes.byref(n))
                if rv:
                    raise PcscError("SCardTransmit", rv)
                out.append(buf.raw[:n.value])
            return out
        finally:
            self.lib.SCardDisconnect(card, SCARD_LEAVE_CARD)


def wait_for(reader_prefix: str, present: bool, timeout: float,
             atr: bytes | None = None) -> ReaderStatus:
    """Poll until a reader whose name starts with reader_prefix shows the card state wanted.

    Raises TimeoutError naming what was last seen.
    """
    deadline = time.monotonic() + timeout
    last = "pcscd not reachable"
    while True:
        try:
            with Context() as ctx:
                while True:
                    names = [r for r in ctx.readers() if r.startswith(reader_prefix)]
                    last = f"readers {ctx.readers()}"
                    for name in names:
                        st = ctx.status(name)
                        last = f"reader {name!r} present={st.present} atr={st.atr.hex()}"
                        if st.present == present and (atr is None or not present
                                                      or st.atr == atr):
                            return st
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
        except PcscError as e:
            last = str(e)
        if time.monotonic() > deadline:
            want = "a card present" if present else "no card"
            raise TimeoutError(f"after {timeout:.0f} s no reader {reader_prefix!r}* with "
                               f"{want}; last seen: {last}")
        time.sleep(0.1)
