"""PC/SC return codes (SCARD_*) and the reader state bits, as pcsc-lite and WinSCard use them.

maps_to is the OpenSC error reader-pcsc.c turns the code into (transmit failures take another
path: a removed card gives SC_ERROR_CARD_REMOVED, a reset card SC_ERROR_CARD_RESET, and a lost
handle or reader a reconnect and SC_ERROR_READER_REATTACHED). Values are unsigned 32-bit; a
Windows LONG shows them as negative numbers.
"""

from __future__ import annotations

from p11spy.decoder.knowledge import Entry as _E

_U = "SC_ERROR_UNKNOWN"
_WIN = "Windows only (smart card minidriver / Base CSP layer); pcsc-lite does not define it."
_MINIDRIVER = "Windows card-module (minidriver) value; pcsc-lite defines but never returns it."
_PCSCD = "pcscd runs: systemctl status pcscd.socket pcscd.service"
_SCAN = "pcsc_scan: are the reader and card seen"
_OTHERS = "other programs using the card (gpg-agent/scdaemon, browsers, other clients)"
_RESTART = "pcscd restarted, or the reader was replugged, while the program kept its handles"

# Where a number has two names, the first is the one pcsc_name() prints.
PCSC: tuple[_E, ...] = (
    _E("SCARD_S_SUCCESS", 0x00000000, "Success.", (), (), "SC_SUCCESS"),
    _E("SCARD_F_INTERNAL_ERROR", 0x80100001, "An internal consistency check of the PC/SC "
       "service failed.", (), (_PCSCD, "the pcscd log"), _U),
    _E("SCARD_E_CANCELLED", 0x80100002, "The call was cancelled with SCardCancel.",
       ("usually deliberate, e.g. OpenSC ending a blocking wait at C_Finalize",), (), _U),
    _E("SCARD_E_INVALID_HANDLE", 0x80100003, "The context or card handle is not valid.",
       (_RESTART,), (_PCSCD, "restart the client"), _U),
    _E("SCARD_E_INVALID_PARAMETER", 0x80100004, "A parameter could not be understood.",
       ("a bug in the caller",), (), _U),
    _E("SCARD_E_INVALID_TARGET", 0x80100005, "Start-up or registry information is missing or "
       "invalid.", (), (), _U),
    _E("SCARD_E_NO_MEMORY", 0x80100006, "Not enough memory.", (), (), _U),
    _E("SCARD_F_WAITED_TOO_LONG", 0x80100007, "An internal timer of the service ran out.",
       (), (), _U),
    _E("SCARD_E_INSUFFICIENT_BUFFER", 0x80100008, "The buffer for the answer is too small.",
       ("a bug in the caller or reader driver",), (), _U),
    _E("SCARD_E_UNKNOWN_READER", 0x80100009, "The reader name is not known.",
       ("the reader was removed or renamed (names carry a number that can change)",),
       (_SCAN,), "SC_ERROR_READER_DETACHED"),
    _E("SCARD_E_TIMEOUT", 0x8010000A, "The time given by the caller ran out.",
       ("normal while polling for card events",), (), _U),
    _E("SCARD_E_SHARING_VIOLATION", 0x8010000B, "Another connection holds the card "
       "exclusively.", ("another program connected in exclusive mode",), (_OTHERS,),
       "SC_ERROR_READER_LOCKED"),
    _E("SCARD_E_NO_SMARTCARD", 0x8010000C, "The reader is empty: no card is inserted.", (),
       (_SCAN,), "SC_ERROR_CARD_NOT_PRESENT"),
    _E("SCARD_E_UNKNOWN_CARD", 0x8010000D, "The card name is not known.", (), (), _U),
    _E("SCARD_E_CANT_DISPOSE", 0x8010000E, "The requested action on the card (reset, eject) "
       "cannot be done.", (), (), _U),
    _E("SCARD_E_PROTO_MISMATCH", 0x8010000F, "The requested protocol (T=0 or T=1) does not "
       "fit the card.", ("a protocol forced in the client's or OpenSC's settings",), (),
       "SC_ERROR_READER"),
    _E("SCARD_E_NOT_READY", 0x80100010, "The reader or card is not ready.", (), (_SCAN,), _U),
    _E("SCARD_E_INVALID_VALUE", 0x80100011, "A parameter has a value that is not valid.", (),
       (), _U),
    _E("SCARD_E_SYSTEM_CANCELLED", 0x80100012, "The system cancelled the action (logoff or "
       "shutdown).", (), (), _U),
    _E("SCARD_F_COMM_ERROR", 0x80100013, "Communication between the program and the PC/SC "
       "service failed.", ("pcscd stopped or crashed; a client and pcscd of different "
                           "versions (e.g. inside a container)",), (_PCSCD,), _U),
    _E("SCARD_F_UNKNOWN_ERROR", 0x80100014, "An internal error of unknown origin.", (),
       (_PCSCD,), _U),
    _E("SCARD_E_INVALID_ATR", 0x80100015, "An ATR taken from the configuration is not valid.",
       (), (), _U),
    _E("SCARD_E_NOT_TRANSACTED", 0x80100016, "A transaction failed, or an end was asked for "
       "one that does not exist.", (), (), "SC_ERROR_TRANSMIT_FAILED"),
    _E("SCARD_E_READER_UNAVAILABLE", 0x80100017, "The reader cannot be used at the moment "
       "(removed or being reset).", ("USB unplug or reset",), (_SCAN,), _U),
    _E("SCARD_P_SHUTDOWN", 0x80100018, "The action stopped because the PC/SC service is "
       "shutting down.", (), (_PCSCD,), _U),
    _E("SCARD_E_PCI_TOO_SMALL", 0x80100019, "The protocol control structure for the answer "
       "is too small.", (), (), _U),
    _E("SCARD_E_READER_UNSUPPORTED", 0x8010001A, "The reader's driver does not meet the "
       "minimum requirements.", (), ("update the reader driver (libccid)",), _U),
    _E("SCARD_E_DUPLICATE_READER", 0x8010001B, "The reader driver produced a name that is "
       "already in use.", (), (), _U),
    _E("SCARD_E_CARD_UNSUPPORTED", 0x8010001C, "The card does not meet the minimum "
       "requirements.", (), (), _U),
    _E("SCARD_E_NO_SERVICE", 0x8010001D, "The PC/SC service is not running.",
       ("pcscd not installed, not started, or its socket not reachable",), (_PCSCD,),
       "SC_ERROR_NO_READERS_FOUND"),
    _E("SCARD_E_SERVICE_STOPPED", 0x8010001E, "The PC/SC service has stopped.",
       ("pcscd exited (it may stop itself when idle and restart on demand)",), (_PCSCD,),
       "SC_ERROR_NO_READERS_FOUND"),
    _E("SCARD_E_UNSUPPORTED_FEATURE", 0x8010001F, "The feature is not supported.", (), (), _U,
       "pcsc-lite value (the same as SCARD_E_UNEXPECTED); Windows uses 0x80100022."),
    _E("SCARD_E_UNEXPECTED", 0x8010001F, "An unexpected card error.", (), (), _U,
       "pcsc-lite gives SCARD_E_UNSUPPORTED_FEATURE the same number."),
    _E("SCARD_E_ICC_INSTALLATION", 0x80100020, "Windows found no primary provider (CSP) for this "
       "card.", (), (), _U,
       _MINIDRIVER),
    _E("SCARD_E_ICC_CREATEORDER", 0x80100021, "The order asked for creating objects is not "
       "supported.", (), (), _U, _MINIDRIVER),
    _E("SCARD_E_DIR_NOT_FOUND", 0x80100023, "The directory does not exist on the card.", (), (),
       _U, _MINIDRIVER),
    _E("SCARD_E_FILE_NOT_FOUND", 0x80100024, "The file does not exist on the card.", (), (), _U,
       _MINIDRIVER),
    _E("SCARD_E_NO_DIR", 0x80100025, "The path names something that is not a directory.", (),
       (), _U, _MINIDRIVER),
    _E("SCARD_E_NO_FILE", 0x80100026, "The path names something that is not a file.", (), (),
       _U, _MINIDRIVER),
    _E("SCARD_E_NO_ACCESS", 0x80100027, "Access to the file is denied.", (), (), _U,
       _MINIDRIVER),
    _E("SCARD_E_WRITE_TOO_MANY", 0x80100028, "The card has no room for the data to write.",
       (), (), _U, _MINIDRIVER),
    _E("SCARD_E_BAD_SEEK", 0x80100029, "Positioning in the file failed.", (), (), _U,
       _MINIDRIVER),
    _E("SCARD_E_INVALID_CHV", 0x8010002A, "The PIN given is wrong.", ("a wrong PIN",), (), _U,
       _MINIDRIVER),
    _E("SCARD_E_UNKNOWN_RES_MSG", 0x8010002B, "A lower layer returned an error nobody "
       "recognizes.", (), (), _U, _MINIDRIVER, ("SCARD_E_UNKNOWN_RES_MNG",)),
    _E("SCARD_E_NO_SUCH_CERTIFICATE", 0x8010002C, "The card holds no such certificate.", (), (),
       _U, _MINIDRIVER),
    _E("SCARD_E_CERTIFICATE_UNAVAILABLE", 0x8010002D, "Getting the certificate "
       "failed.", (), (), _U, _MINIDRIVER),
    _E("SCARD_E_NO_READERS_AVAILABLE", 0x8010002E, "No reader is connected.",
       ("no reader plugged in, or its driver (e.g. libccid, vpcd) not loaded by pcscd",),
       (_SCAN, "lsusb: is the reader seen at all"), "SC_ERROR_NO_READERS_FOUND"),
    _E("SCARD_E_COMM_DATA_LOST", 0x8010002F, "Communication with the card failed; try "
       "again.", ("bad contact, a flaky reader",), (), _U, _MINIDRIVER),
    _E("SCARD_E_NO_KEY_CONTAINER", 0x80100030, "The key container does not exist on the card.",
       (), (), _U, _MINIDRIVER),
    _E("SCARD_E_SERVER_TOO_BUSY", 0x80100031, "The PC/SC service is too busy to finish the "
       "action.", (), (), _U, _MINIDRIVER),
    _E("SCARD_W_UNSUPPORTED_CARD", 0x80100065, "The reader cannot talk to the card (its ATR "
       "or configuration conflicts).", (), (_SCAN,), _U),
    _E("SCARD_W_UNRESPONSIVE_CARD", 0x80100066, "The card does not respond to a reset.",
       ("card inserted the wrong way, dirty contacts, a dead card",),
       ("reseat or clean the card; try another reader",), "SC_ERROR_CARD_UNRESPONSIVE"),
    _E("SCARD_W_UNPOWERED_CARD", 0x80100067, "Power to the card has been removed.",
       ("another program unpowered it, or USB power saving",), (),
       "SC_ERROR_CARD_UNRESPONSIVE"),
    _E("SCARD_W_RESET_CARD", 0x80100068, "The card was reset by someone else; anything "
       "established on it (e.g. a verified PIN) is gone and the program must reconnect.",
       ("another program reset the card",), (_OTHERS,), _U),
    _E("SCARD_W_REMOVED_CARD", 0x80100069, "The card was removed; the handle can no longer "
       "be used.", ("card pulled, token unplugged, a USB glitch",),
       ("dmesg / journalctl for USB disconnects",), "SC_ERROR_CARD_REMOVED"),
    _E("SCARD_W_SECURITY_VIOLATION", 0x8010006A, "Access denied by the PC/SC service.",
       ("pcscd's access control (polkit) refused this user, e.g. a service account or a "
        "remote session",), ("the polkit rules for pcscd",), _U),
    _E("SCARD_W_WRONG_CHV", 0x8010006B, "The PIN given is wrong.", ("a wrong PIN",), (), _U,
       _MINIDRIVER),
    _E("SCARD_W_CHV_BLOCKED", 0x8010006C, "The PIN is blocked after too many wrong tries.", (),
       ("unblock with the PUK or administrator key",), _U, _MINIDRIVER),
    _E("SCARD_W_EOF", 0x8010006D, "The end of the file on the card was reached.", (), (), _U,
       _MINIDRIVER),
    _E("SCARD_W_CANCELLED_BY_USER", 0x8010006E, "The user cancelled a card or PIN dialog.",
       (), (), _U, _MINIDRIVER),
    _E("SCARD_W_CARD_NOT_AUTHENTICATED", 0x8010006F, "The card has not been given a PIN yet.", (),
       (), _U, _MINIDRIVER),
    _E("SCARD_E_UNSUPPORTED_FEATURE", 0x80100022, "The feature is not supported.", (), (), None,
       "Windows value; pcsc-lite uses 0x8010001F for this name."),
    _E("SCARD_E_PIN_CACHE_EXPIRED", 0x80100032, "The cached PIN has expired.", (), (), None,
       _WIN),
    _E("SCARD_E_NO_PIN_CACHE", 0x80100033, "Caching this PIN is not allowed.", (), (), None, _WIN),
    _E("SCARD_E_READ_ONLY_CARD", 0x80100034, "The card is read-only.", (), (), None, _WIN),
    _E("SCARD_W_CACHE_ITEM_NOT_FOUND", 0x80100070, "The item asked for is not in the card "
       "cache.", (), (), None, _WIN),
    _E("SCARD_W_CACHE_ITEM_STALE", 0x80100071, "The cached item was too old and has been "
       "removed.", (), (), None, _WIN),
    _E("SCARD_W_CACHE_ITEM_TOO_BIG", 0x80100072, "The item is larger than the card cache "
       "allows.", (), (), None, _WIN),
)

_STATE = ("A reader state bit (SCardGetStatusChange), not an error. OpenSC logs the state word "
          "with an event counter in the upper 16 bits.")

# Reader state bits: looked up by name only, since their small numbers are not return codes.
PCSC_STATE_FLAGS: tuple[_E, ...] = (
    _E("SCARD_STATE_UNAWARE", 0x0000, "The caller does not know the reader's state yet.",
       note=_STATE),
    _E("SCARD_STATE_IGNORE", 0x0001, "The caller is not interested in this reader.",
       note=_STATE),
    _E("SCARD_STATE_CHANGED", 0x0002, "The state differs from what the caller knew.",
       note=_STATE),
    _E("SCARD_STATE_UNKNOWN", 0x0004, "The reader is not known to the service.", note=_STATE),
    _E("SCARD_STATE_UNAVAILABLE", 0x0008, "The reader's state cannot be obtained.",
       note=_STATE),
    _E("SCARD_STATE_EMPTY", 0x0010, "No card in the reader.", note=_STATE),
    _E("SCARD_STATE_PRESENT", 0x0020, "A card is in the reader.", note=_STATE),
    _E("SCARD_STATE_ATRMATCH", 0x0040, "The card's ATR matches the one the caller looks "
       "for.", note=_STATE),
    _E("SCARD_STATE_EXCLUSIVE", 0x0080, "A program uses the card exclusively.",
       ("another program connected in exclusive mode",), (_OTHERS,), note=_STATE),
    _E("SCARD_STATE_INUSE", 0x0100, "A program uses the card (shared).", note=_STATE),
    _E("SCARD_STATE_MUTE", 0x0200, "The card does not answer (no ATR).",
       ("card inserted the wrong way, dirty contacts, a dead card",), note=_STATE),
    _E("SCARD_STATE_UNPOWERED", 0x0400, "The card is not powered.", note=_STATE),
)
