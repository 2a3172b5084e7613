"""ISO/IEC 7816-4 status words (SW1 SW2), the card's answer to every command.

Three tables, tried in order: exact status words; patterns with a variable part (63Cx = x
tries left, 61xx = xx bytes waiting, 6Cxx = resend with Le xx); and, last, the coarse meaning
of each SW1 group for anything else. short is the few words decoded APDUs and the viewer's
lists show (decoder/apdu/sw.py). maps_to is the OpenSC error iso7816.c gives the status
word (a card driver may check status words itself first).
"""

from __future__ import annotations

from p11spy.decoder.knowledge import Entry as _E
from p11spy.decoder.knowledge import Pattern as _P

_FAILED = "SC_ERROR_CARD_CMD_FAILED"
_PARAMS = "SC_ERROR_INCORRECT_PARAMETERS"
_NO_SUPPORT = "SC_ERROR_NO_CARD_SUPPORT"
_NOT_ALLOWED = "SC_ERROR_NOT_ALLOWED"
_DRIVER = ("the card's driver does not fit the card or its application (check opensc-tool -n "
           "and the driver settings in opensc.conf)")
_UNKNOWN_TO_OPENSC = "OpenSC's generic table does not list it; a card driver may know it."
_HARMLESS_PROBE = "often harmless: drivers probe for optional files and objects"

SW: tuple[_E, ...] = (
    _E("9000", 0x9000, "The command worked.", (), (), "SC_SUCCESS", short="success"),
    # --- 62: warning, card memory unchanged ----------------------------------------------
    _E("6200", 0x6200, "Warning without detail; the card's memory is unchanged.", (), (),
       _FAILED, short="warning: no information, state unchanged"),
    _E("6281", 0x6281, "Part of the data returned may be damaged.", ("a failing card",),
       ("back up what can be read and replace the card",), "SC_ERROR_CORRUPTED_DATA",
       short="warning: part of the returned data may be corrupted"),
    _E("6282", 0x6282, "The file or record ended before the number of bytes asked for (or a "
       "search found nothing).", ("usually harmless: a read past the end of a file",), (),
       "SC_ERROR_FILE_END_REACHED", short="warning: end of file or record reached before Le bytes"),
    _E("6283", 0x6283, "The selected file is deactivated.", (), (), _FAILED,
       short="warning: selected file deactivated (or card locked)"),
    _E("6284", 0x6284, "The file's control information is not in the ISO 7816-4 format.", (),
       (), _FAILED, short="warning: FCI not formatted per ISO 7816-4"),
    _E("6285", 0x6285, "The selected file is in its termination state.", (), (), _FAILED,
       short="warning: selected file in termination state"),
    _E("6286", 0x6286, "No input is available from a sensor on the card.", (), (), _FAILED,
       short="warning: no input data available from a sensor"),
    _E("6287", 0x6287, "At least one of the records referred to is deactivated.", (), (),
       _FAILED, _UNKNOWN_TO_OPENSC),
    # --- 63: warning, card memory changed ------------------------------------------------
    _E("6300", 0x6300, "Warning without detail; the card's memory changed. Many cards use it "
       "for 'verification failed' without a retry count.",
       ("a wrong PIN or key on cards that do not report tries left",), (), _FAILED,
       short="warning: no information, state changed (often: verification failed)"),
    _E("6340", 0x6340, "A comparison did not match.", (), (), _FAILED, _UNKNOWN_TO_OPENSC),
    _E("6381", 0x6381, "The last write filled the file up.", (), (), _FAILED,
       short="warning: file filled up by the last write"),
    # --- 64, 65: execution errors --------------------------------------------------------
    _E("6400", 0x6400, "The command failed while running; the card's memory is unchanged.",
       (), (), _FAILED, short="execution error, state unchanged"),
    _E("6401", 0x6401, "The card needs an immediate response (an interaction it expects "
       "first).", (), (), _FAILED,
       short="execution error: immediate response required by the card"),
    _E("6500", 0x6500, "The command failed while running; the card's memory changed.", (), (),
       _FAILED, short="execution error, state changed"),
    _E("6581", 0x6581, "The card's memory failed.", ("a worn-out or damaged card",),
       ("replace the card",), "SC_ERROR_MEMORY_FAILURE", short="execution error: memory failure"),
    # --- 67 to 6F: checking errors --------------------------------------------------------
    _E("6700", 0x6700, "Wrong length (Lc or Le).", ("a driver bug, or data too long for the "
                                                    "card",), (), "SC_ERROR_WRONG_LENGTH",
       short="wrong length (Lc or Le)"),
    _E("6800", 0x6800, "A function of the class byte (CLA) is not supported.", (), (),
       _NO_SUPPORT, short="function in CLA not supported"),
    _E("6881", 0x6881, "Logical channels are not supported.", (), (), _NO_SUPPORT,
       short="logical channel not supported"),
    _E("6882", 0x6882, "Secure messaging is not supported.", (), (), _NO_SUPPORT,
       short="secure messaging not supported"),
    _E("6883", 0x6883, "The card expected the last command of a chain.", (), (), _FAILED,
       short="last command of the chain expected"),
    _E("6884", 0x6884, "Command chaining is not supported.", (), (), _NO_SUPPORT,
       short="command chaining not supported"),
    _E("6900", 0x6900, "Command not allowed, without detail.", (), (), _NOT_ALLOWED,
       short="command not allowed"),
    _E("6981", 0x6981, "The command does not fit the structure of the file.", (), (),
       _FAILED, short="command incompatible with file structure"),
    _E("6982", 0x6982, "Security status not satisfied: the card wants a PIN or other "
       "authentication first.",
       ("no PIN verified yet, or the verification was lost (card reset, another program)",
        "a key that wants the PIN again right before each use"),
       ("a successful C_Login before this command",
        "CKA_ALWAYS_AUTHENTICATE on the key"), "SC_ERROR_SECURITY_STATUS_NOT_SATISFIED",
       short="security status not satisfied (PIN or authentication missing)"),
    _E("6983", 0x6983, "The PIN or key is blocked.", ("too many wrong tries",),
       ("unblock with the PUK or SO PIN",), "SC_ERROR_AUTH_METHOD_BLOCKED",
       short="authentication method blocked (PIN or key blocked)"),
    _E("6984", 0x6984, "The PIN or key referred to cannot be used (not set, or invalidated).",
       ("a PIN that was never set", "a blocked or invalidated key"), (),
       "SC_ERROR_REF_DATA_NOT_USABLE", short="reference data not usable"),
    _E("6985", 0x6985, "Conditions of use not satisfied: the command came at the wrong time.",
       ("commands in the wrong order, e.g. a signature without the security environment set "
        "first",), (), _NOT_ALLOWED, short="conditions of use not satisfied"),
    _E("6986", 0x6986, "Command not allowed because no file is selected.", (), (),
       _NOT_ALLOWED, short="command not allowed: no current EF"),
    _E("6987", 0x6987, "Secure messaging data the card expected is missing.", (), (), _PARAMS,
       short="expected secure messaging data objects missing"),
    _E("6988", 0x6988, "Secure messaging data is wrong (bad MAC or cryptogram).",
       ("keys out of step between host and card",), (), _PARAMS,
       short="secure messaging data objects incorrect"),
    _E("6999", 0x6999, "Not an ISO value: Java Cards commonly answer it when selecting the "
       "applet failed.", ("the applet is missing or broken",), (), _FAILED,
       _UNKNOWN_TO_OPENSC, short="applet selection failed (Java Card)"),
    _E("6A00", 0x6A00, "Wrong P1 or P2, without detail.", (_DRIVER,), (), _PARAMS,
       short="wrong parameters P1-P2"),
    _E("6A80", 0x6A80, "The data field of the command is wrong.",
       ("data the card does not accept", "some tokens answer this to a VERIFY without a PIN"),
       (), _PARAMS, short="incorrect parameters in the data field"),
    _E("6A81", 0x6A81, "The card does not support this function.", (), (), _NO_SUPPORT,
       short="function not supported"),
    _E("6A82", 0x6A82, "The card has no file or application with that name or id.",
       (_HARMLESS_PROBE, "the application was never installed or personalized", _DRIVER), (),
       "SC_ERROR_FILE_NOT_FOUND", short="file or application not found"),
    _E("6A83", 0x6A83, "The record asked for does not exist.", (), (), "SC_ERROR_RECORD_NOT_FOUND",
       short="record not found"),
    _E("6A84", 0x6A84, "Not enough room in the file or on the card.", ("the card is full",),
       ("remove unused objects",), "SC_ERROR_NOT_ENOUGH_MEMORY",
       short="not enough memory space in the file"),
    _E("6A85", 0x6A85, "The data length does not match its TLV structure.", (), (), _PARAMS,
       short="Lc inconsistent with TLV structure"),
    _E("6A86", 0x6A86, "Wrong P1 or P2.", (_DRIVER,), (), _PARAMS,
       short="incorrect parameters P1-P2"),
    _E("6A87", 0x6A87, "The data length does not fit P1 and P2.", (), (), _PARAMS,
       short="Lc inconsistent with P1-P2"),
    _E("6A88", 0x6A88, "The key, PIN or data object referred to is not on the card.",
       (_HARMLESS_PROBE, "a wrong key reference"), (), "SC_ERROR_DATA_OBJECT_NOT_FOUND",
       short="referenced data (key, PIN, data object) not found"),
    _E("6A89", 0x6A89, "The file already exists.", (), (), "SC_ERROR_FILE_ALREADY_EXISTS",
       short="file already exists"),
    _E("6A8A", 0x6A8A, "An application (DF) of that name already exists.", (), (),
       "SC_ERROR_FILE_ALREADY_EXISTS", short="DF name already exists"),
    _E("6B00", 0x6B00, "Wrong P1 or P2 (e.g. an offset outside the file).", (), (), _PARAMS,
       short="wrong parameters P1-P2 (e.g. offset outside the EF)"),
    _E("6D00", 0x6D00, "The instruction (INS) is not supported.",
       ("the wrong application is selected", _DRIVER), (), "SC_ERROR_INS_NOT_SUPPORTED",
       short="instruction not supported (or wrong application selected)"),
    _E("6E00", 0x6E00, "The class byte (CLA) is not supported.", (_DRIVER,), (),
       "SC_ERROR_CLASS_NOT_SUPPORTED", short="class not supported"),
    _E("6F00", 0x6F00, "Error without precise diagnosis, often an exception in the card's "
       "applet.", ("a bug or failure in the card's application",), (), _FAILED,
       short="no precise diagnosis (often an applet exception)"),
)

# Short texts of status words whose meaning depends on the command, so explain leaves them to
# the SW1 group: the decoded APDU says what they mean after the command that gets them.
SHORT_ONLY = {0x6310: "more data available (GET STATUS: ask for the next occurrence)"}

SW_PATTERNS: tuple[_P, ...] = (
    _P("61xx", 0x6100, 0x61FF,
       "Success; {n} more bytes of answer are waiting, fetched with GET RESPONSE "
       "(00 C0 00 00 {xx}).",
       "Success; 256 or more bytes of answer are waiting, fetched with GET RESPONSE "
       "(00 C0 00 00 00).",
       ("normal: OpenSC fetches the rest itself and reports 9000",)),
    _P("63Cx", 0x63C0, 0x63CF,
       "Verification failed (wrong PIN or key): {n} tries left before it blocks.",
       "Verification failed and no tries are left: the PIN or key is now blocked.",
       ("a wrong PIN, or right digits in the wrong encoding",),
       ("stop automatic retries before the counter reaches 0",
        "after a block: unblock with the PUK or SO PIN"),
       "SC_ERROR_PIN_CODE_INCORRECT",
       "x is a counter; after VERIFY, CHANGE or RESET RETRY COUNTER it is the tries left."),
    _P("630x", 0x6301, 0x630F,
       "Some tokens (e.g. old YubiKey NEO PIV) report a failed verification this way: "
       "{n} tries left.", None,
       ("a wrong PIN",), (), _FAILED, _UNKNOWN_TO_OPENSC),
    _P("6Cxx", 0x6C00, 0x6CFF,
       "Wrong Le: the card has exactly {n} bytes; the command must be sent again with "
       "Le = {xx}.",
       "Wrong Le: the card has exactly 256 bytes; the command must be sent again with Le = 00.",
       ("normal: OpenSC resends the command itself",), (), "SC_ERROR_WRONG_LENGTH"),
    _P("6202-6280", 0x6202, 0x6280,
       "Warning: the card asks the terminal for a 'triggering' action.", None, (), (),
       _FAILED),
    _P("6402-6480", 0x6402, 0x6480,
       "Execution error: the card asks the terminal for a 'triggering' action.", None, (), (),
       _FAILED),
    _P("66xx", 0x6600, 0x66FF,
       "Security-related error (reserved by ISO, rarely used).", None, (), (), _FAILED),
)

# The coarse meaning of each SW1, for status words none of the above describes.
SW_GROUPS: tuple[_P, ...] = (
    _P("60xx", 0x6000, 0x60FF, "Not a status word: 60 is the T=0 'NULL' procedure byte.",
       None, ("a transmission problem, or a broken reader driver",)),
    _P("62xx", 0x6200, 0x62FF, "A warning; the card's memory is unchanged.", None, (), (),
       _FAILED),
    _P("63xx", 0x6300, 0x63FF, "A warning; the card's memory changed.", None, (), (), _FAILED),
    _P("64xx", 0x6400, 0x64FF, "The command failed while running; memory unchanged.", None,
       (), (), _FAILED),
    _P("65xx", 0x6500, 0x65FF, "The command failed while running; memory changed.", None, (),
       (), _FAILED),
    _P("67xx", 0x6700, 0x67FF, "Wrong length (the detail byte is the card vendor's).", None,
       (), (), _FAILED),
    _P("68xx", 0x6800, 0x68FF, "A function of the class byte is not supported.", None, (), (),
       _FAILED),
    _P("69xx", 0x6900, 0x69FF, "The command is not allowed.", None, (), (), _FAILED),
    _P("6Axx", 0x6A00, 0x6AFF, "Wrong parameters P1 or P2.", None, (), (), _FAILED),
    _P("6Bxx", 0x6B00, 0x6BFF, "Wrong parameters (the detail byte is the card vendor's).",
       None, (), (), _FAILED),
    _P("6Dxx", 0x6D00, 0x6DFF, "Instruction not supported (the detail byte is the card "
       "vendor's).", None, (_DRIVER,), (), _FAILED),
    _P("6Exx", 0x6E00, 0x6EFF, "Class not supported (the detail byte is the card vendor's).",
       None, (_DRIVER,), (), _FAILED),
    _P("6Fxx", 0x6F00, 0x6FFF, "An error without ISO diagnosis; the detail byte is the card "
       "vendor's.", None, ("a failure inside the card's application",), (), _FAILED),
    _P("9xxx", 0x9000, 0x9FFF, "A status defined by the card's application (EMV, GSM or a "
       "vendor applet), not by ISO.", None, (), ("the card or applet vendor's documentation",),
       _FAILED, _UNKNOWN_TO_OPENSC),
)
