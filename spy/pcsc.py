"""The PC/SC calls the preloaded spy records, with the same parameter roles as the PKCS#11
table: the C wrappers (spy/pcsc.c) record each parameter under its index here, and the
decoder renders them from this table.

Types are pcsc-lite's on Linux: DWORD and LONG are C longs, handles are LONGs.
"""

from __future__ import annotations

from .pkcs11.model import Family, Function, Param, Role, family

_P = Param


def _h(name: str, kind: str) -> Param:
    return _P(name, "SCARDHANDLE", Role.HANDLE, kind=kind)


FUNCTIONS: tuple[Function, ...] = tuple(
    Function(name, params, since="pcsc", index=i)
    for i, (name, params) in enumerate([
        ("SCardEstablishContext", (
            _P("dwScope", "DWORD", Role.ENUM, kind="SCARD_SCOPE"),
            _P("pvReserved1", "LPCVOID", Role.POINTER),
            _P("pvReserved2", "LPCVOID", Role.POINTER),
            _P("phContext", "LPSCARDCONTEXT", Role.HANDLE_OUT, kind="context"))),
        ("SCardReleaseContext", (_h("hContext", "context"),)),
        ("SCardListReaders", (
            _h("hContext", "context"),
            _P("mszGroups", "LPCSTR", Role.CSTRING),
            _P("mszReaders", "LPSTR", Role.BYTES_OUT, length="pcchReaders"),
            _P("pcchReaders", "LPDWORD", Role.LENGTH_PTR))),
        ("SCardGetStatusChange", (
            _h("hContext", "context"),
            _P("dwTimeout", "DWORD", Role.ULONG),
            _P("rgReaderStates", "SCARD_READERSTATE *", Role.BYTES_INOUT, length="cReaders"),
            _P("cReaders", "DWORD", Role.LENGTH))),
        ("SCardConnect", (
            _h("hContext", "context"),
            _P("szReader", "LPCSTR", Role.CSTRING),
            _P("dwShareMode", "DWORD", Role.ENUM, kind="SCARD_SHARE"),
            _P("dwPreferredProtocols", "DWORD", Role.FLAGS, kind="SCARD_PROTOCOL"),
            _P("phCard", "LPSCARDHANDLE", Role.HANDLE_OUT, kind="card"),
            _P("pdwActiveProtocol", "LPDWORD", Role.ULONG_OUT, kind="SCARD_PROTOCOL"))),
        ("SCardReconnect", (
            _h("hCard", "card"),
            _P("dwShareMode", "DWORD", Role.ENUM, kind="SCARD_SHARE"),
            _P("dwPreferredProtocols", "DWORD", Role.FLAGS, kind="SCARD_PROTOCOL"),
            _P("dwInitialization", "DWORD", Role.ENUM, kind="SCARD_DISPOSITION"),
            _P("pdwActiveProtocol", "LPDWORD", Role.ULONG_OUT, kind="SCARD_PROTOCOL"))),
        ("SCardDisconnect", (
            _h("hCard", "card"),
            _P("dwDisposition", "DWORD", Role.ENUM, kind="SCARD_DISPOSITION"))),
        ("SCardBeginTransaction", (_h("hCard", "card"),)),
        ("SCardEndTransaction", (
            _h("hCard", "card"),
            _P("dwDisposition", "DWORD", Role.ENUM, kind="SCARD_DISPOSITION"))),
        ("SCardStatus", (
            _h("hCard", "card"),
            _P("szReaderName", "LPSTR", Role.BYTES_OUT, length="pcchReaderLen"),
            _P("pcchReaderLen", "LPDWORD", Role.LENGTH_PTR),
            _P("pdwState", "LPDWORD", Role.ULONG_OUT, kind="SCARD_STATUS"),
            _P("pdwProtocol", "LPDWORD", Role.ULONG_OUT, kind="SCARD_PROTOCOL"),
            _P("pbAtr", "LPBYTE", Role.BYTES_OUT, length="pcbAtrLen"),
            _P("pcbAtrLen", "LPDWORD", Role.LENGTH_PTR))),
        ("SCardTransmit", (
            _h("hCard", "card"),
            _P("pioSendPci", "LPCSCARD_IO_REQUEST", Role.ULONG, kind="SCARD_PROTOCOL"),
            _P("pbSendBuffer", "LPCBYTE", Role.BYTES_IN, length="cbSendLength", kind="apdu"),
            _P("cbSendLength", "DWORD", Role.LENGTH),
            _P("pioRecvPci", "LPSCARD_IO_REQUEST", Role.POINTER),
            _P("pbRecvBuffer", "LPBYTE", Role.BYTES_OUT, length="pcbRecvLength"),
            _P("pcbRecvLength", "LPDWORD", Role.LENGTH_PTR))),
        ("SCardControl", (
            _h("hCard", "card"),
            _P("dwControlCode", "DWORD", Role.ULONG),
            _P("pbSendBuffer", "LPCVOID", Role.BYTES_IN, length="cbSendLength"),
            _P("cbSendLength", "DWORD", Role.LENGTH),
            _P("pbRecvBuffer", "LPVOID", Role.BYTES_OUT_FIXED, length="lpBytesReturned"),
            _P("cbRecvLength", "DWORD", Role.LENGTH),
            _P("lpBytesReturned", "LPDWORD", Role.LENGTH_PTR))),
        ("SCardCancel", (_h("hContext", "context"),)),
        ("SCardGetAttrib", (
            _h("hCard", "card"),
            _P("dwAttrId", "DWORD", Role.ULONG),
            _P("pbAttr", "LPBYTE", Role.BYTES_OUT, length="pcbAttrLen"),
            _P("pcbAttrLen", "LPDWORD", Role.LENGTH_PTR))),
    ])
)
BY_NAME = {f.name: f for f in FUNCTIONS}

# The parameter index under which a PC/SC record names the PKCS#11 call it ran under.
PARENT_PARAM = 255

FAMILIES: dict[str, Family] = {
    f.name: f for f in (
        family("SCARD_SCOPE", [("SCARD_SCOPE_USER", 0), ("SCARD_SCOPE_TERMINAL", 1),
                               ("SCARD_SCOPE_SYSTEM", 2)]),
        family("SCARD_SHARE", [("SCARD_SHARE_EXCLUSIVE", 1), ("SCARD_SHARE_SHARED", 2),
                               ("SCARD_SHARE_DIRECT", 3)]),
        family("SCARD_PROTOCOL", [("SCARD_PROTOCOL_T0", 1), ("SCARD_PROTOCOL_T1", 2),
                                  ("SCARD_PROTOCOL_RAW", 4), ("SCARD_PROTOCOL_T15", 8)],
               is_flags=True),
        family("SCARD_DISPOSITION", [("SCARD_LEAVE_CARD", 0), ("SCARD_RESET_CARD", 1),
                                     ("SCARD_UNPOWER_CARD", 2), ("SCARD_EJECT_CARD", 3)]),
        # pcsc-lite's SCardStatus state bits.
        family("SCARD_STATUS", [("SCARD_UNKNOWN", 0x1), ("SCARD_ABSENT", 0x2),
                                ("SCARD_PRESENT", 0x4), ("SCARD_SWALLOWED", 0x8),
                                ("SCARD_POWERED", 0x10), ("SCARD_NEGOTIABLE", 0x20),
                                ("SCARD_SPECIFIC", 0x40)], is_flags=True),
    )
}

# CCID PIN-pad features (PC/SC part 10): the tags of GET_FEATURE_REQUEST's answer whose control
# codes carry PIN structures, which the spy masks like PINs.
FEATURE_VERIFY_PIN_DIRECT = 0x06
FEATURE_MODIFY_PIN_DIRECT = 0x07
# SCARD_CTL_CODE(3400) on pcsc-lite: the request for the feature list.
CM_IOCTL_GET_FEATURE_REQUEST = 0x42000D48


def pin_pad_codes(features: bytes) -> set[int]:
    """The control codes of the PIN-pad features in a GET_FEATURE_REQUEST answer (entries of
    tag, length 4, code big-endian): what an SCardControl carrying a PIN structure uses."""
    return {int.from_bytes(features[i + 2:i + 6], "big")
            for i in range(0, len(features) - 5, 6)
            if features[i] in (FEATURE_VERIFY_PIN_DIRECT, FEATURE_MODIFY_PIN_DIRECT)
            and features[i + 1] == 4}


def c_defines() -> str:
    lines = [f"#define P11_SC_N {len(FUNCTIONS)}", f"#define P11_SC_PARENT {PARENT_PARAM}",
             f"#define P11_FEATURE_VERIFY_PIN_DIRECT {FEATURE_VERIFY_PIN_DIRECT}",
             f"#define P11_FEATURE_MODIFY_PIN_DIRECT {FEATURE_MODIFY_PIN_DIRECT}",
             f"#define P11_CM_IOCTL_GET_FEATURE_REQUEST 0x{CM_IOCTL_GET_FEATURE_REQUEST:x}UL"]
    lines += [f"#define P11_SC_{f.name} {f.index}" for f in FUNCTIONS]
    names = ", ".join(f'"{f.name}"' for f in FUNCTIONS)
    lines.append("static const char *const p11_sc_names[P11_SC_N] __attribute__((unused)) = "
                 f"{{{names}}};")
    return "\n".join(lines) + "\n"
