"""OpenSC's SC_ERROR_* codes, and the PKCS#11 return value OpenSC's module turns each into.

OpenSC debug logs show these as negative numbers (`returning with: -1214 ...`); the client only
ever sees the CKR_* in maps_to. Anything OpenSC does not map explicitly becomes
CKR_GENERAL_ERROR, which is why that code says so little.
"""

from __future__ import annotations

from p11spy.decoder.knowledge import Entry as _E

_GEN = "CKR_GENERAL_ERROR"
_DEBUG = "the lines before it in the OpenSC debug log (OPENSC_DEBUG=9)"
_PCSC = "pcscd runs and sees the reader and card: pcsc_scan"
_CONTACT = "reseat the card or token; try another USB port without a hub"
_OTHER_APPS = "other programs using the card (gpg-agent/scdaemon, browsers, other clients)"
_INIT = "only seen while personalizing a card (pkcs15-init); check its profile and options"
_SM = ("secure messaging between OpenSC and the card failed; check that the card driver and "
       "OpenSC version support this card")

OPENSC: tuple[_E, ...] = (
    _E("SC_SUCCESS", 0, "Success: nothing went wrong.", (), (), "CKR_OK"),
    # --- reader and PC/SC --------------------------------------------------------------------
    _E("SC_ERROR_READER", -1100, "The reader or PC/SC failed, with no detail.",
       ("a reader driver problem, or a PC/SC protocol mismatch",), (_PCSC,), _GEN),
    _E("SC_ERROR_NO_READERS_FOUND", -1101, "PC/SC reports no reader at all.",
       ("no reader plugged in", "pcscd is not running or not reachable (socket activation, "
        "containers, a different pcscd than the library expects)"),
       (_PCSC, "systemctl status pcscd.socket pcscd.service"), _GEN),
    _E("SC_ERROR_CARD_NOT_PRESENT", -1104, "The reader has no card in it.",
       ("card not inserted, or a USB token not seen as inserted",),
       (_PCSC,), "CKR_TOKEN_NOT_PRESENT"),
    _E("SC_ERROR_CARD_REMOVED", -1105, "The card was removed, or vanished in the middle of a "
       "command.",
       ("card pulled", "a loose USB connection or USB power saving"),
       ("dmesg / journalctl for USB disconnects at that time",), "CKR_DEVICE_REMOVED"),
    _E("SC_ERROR_CARD_RESET", -1106, "Another program reset the card, so its state (e.g. the "
       "PIN having been verified) is lost.",
       ("another application reset the card or connected exclusively",),
       (_OTHER_APPS,), _GEN),
    _E("SC_ERROR_TRANSMIT_FAILED", -1107, "Sending a command to the card failed.",
       ("bad contact, a flaky reader, or the card stopped answering",),
       (_CONTACT, _DEBUG + " for the PC/SC code"), _GEN),
    _E("SC_ERROR_KEYPAD_TIMEOUT", -1108, "PIN-pad reader: nobody typed the PIN in time.",
       ("the user did not see or answer the prompt on the reader",), (),
       "CKR_FUNCTION_CANCELED"),
    _E("SC_ERROR_KEYPAD_CANCELLED", -1109, "PIN-pad reader: the user pressed Cancel.", (), (),
       "CKR_FUNCTION_CANCELED"),
    _E("SC_ERROR_KEYPAD_PIN_MISMATCH", -1110, "PIN-pad reader: the new PIN and its "
       "confirmation differ.", ("a typing mistake on the reader",), (), "CKR_PIN_INVALID"),
    _E("SC_ERROR_KEYPAD_MSG_TOO_LONG", -1111, "PIN-pad reader: the message to display is too "
       "long for it.", (), (), _GEN),
    _E("SC_ERROR_EVENT_TIMEOUT", -1112, "Waiting for a reader or card event timed out.",
       ("nothing happened within the wait time; often normal while polling",), (), _GEN),
    _E("SC_ERROR_CARD_UNRESPONSIVE", -1113, "The card does not answer.",
       ("card inserted the wrong way, dirty or damaged contacts, an unpowered or mute card",),
       (_CONTACT, "pcsc_scan: does the card give an ATR"), "CKR_DEVICE_ERROR"),
    _E("SC_ERROR_READER_DETACHED", -1114, "The reader was unplugged, or PC/SC no longer knows "
       "it.", ("USB unplug, hub reset, pcscd restart",), (_PCSC,), "CKR_TOKEN_NOT_PRESENT"),
    _E("SC_ERROR_READER_REATTACHED", -1115, "The reader came back; OpenSC reconnected and the "
       "caller must try again.", ("a brief USB disconnect or a pcscd restart",),
       ("dmesg / journalctl for USB events",), _GEN),
    _E("SC_ERROR_READER_LOCKED", -1116, "Another program holds the card exclusively.",
       ("another application connected in exclusive mode or keeps a long transaction",),
       (_OTHER_APPS,), "CKR_DEVICE_ERROR"),
    # --- the card's answers (status words) ---------------------------------------------------
    _E("SC_ERROR_CARD_CMD_FAILED", -1200, "The card answered with an error OpenSC has no "
       "specific code for.", ("see the status word in the debug log",), (_DEBUG,), _GEN),
    _E("SC_ERROR_FILE_NOT_FOUND", -1201, "The card has no such file or application (SW 6A82).",
       ("the card is not the type the driver expects", "the application was never installed "
        "or personalized", "often harmless: drivers probe for optional files"), (_DEBUG,),
       _GEN),
    _E("SC_ERROR_RECORD_NOT_FOUND", -1202, "The card has no such record (SW 6A83).", (), (),
       _GEN),
    _E("SC_ERROR_CLASS_NOT_SUPPORTED", -1203, "The card rejected the class byte (CLA) of the "
       "command (SW 6E00).", ("the wrong driver for this card",),
       ("opensc-tool -n: which driver OpenSC picked",), _GEN),
    _E("SC_ERROR_INS_NOT_SUPPORTED", -1204, "The card or its application does not know the "
       "command (SW 6D00).", ("the wrong application selected, or the wrong driver",),
       ("opensc-tool -n: which driver OpenSC picked",), _GEN),
    _E("SC_ERROR_INCORRECT_PARAMETERS", -1205, "The card rejected the command's parameters or "
       "data (SW 6A80, 6A86, 6B00, ...).", ("a driver/card mismatch, or data the card does "
                                            "not accept",), (_DEBUG,), "CKR_DATA_INVALID"),
    _E("SC_ERROR_WRONG_LENGTH", -1206, "The card reported a wrong length (SW 6700 or 6Cxx).",
       ("data too long for the card, or a driver bug",), (), "CKR_DATA_LEN_RANGE"),
    _E("SC_ERROR_MEMORY_FAILURE", -1207, "The card's memory failed (SW 6581).",
       ("a worn-out or damaged card",), ("replace the card; back up what can still be read",),
       "CKR_DEVICE_ERROR"),
    _E("SC_ERROR_NO_CARD_SUPPORT", -1208, "The card does not support this function, channel "
       "or secure messaging (SW 68xx, 6A81).", ("a feature the card model lacks",), (),
       "CKR_TOKEN_NOT_RECOGNIZED"),
    _E("SC_ERROR_NOT_ALLOWED", -1209, "The card does not allow this command in its current "
       "state (SW 6900, 6985, 6986).",
       ("wrong order of commands, a key whose use conditions are not met",),
       ("whether the key needs the PIN right before each use (CKA_ALWAYS_AUTHENTICATE)",),
       _GEN, "C_Sign and C_Decrypt turn it into CKR_FUNCTION_FAILED instead."),
    _E("SC_ERROR_INVALID_CARD", -1210, "OpenSC cannot handle this card; the driver rejected "
       "it.", ("an unsupported or blank card",), ("opensc-tool -n and --list-drivers",),
       "CKR_TOKEN_NOT_RECOGNIZED"),
    _E("SC_ERROR_SECURITY_STATUS_NOT_SATISFIED", -1211, "The card wants a PIN or other "
       "authentication first (SW 6982).",
       ("no login, or the login was lost (card reset by another program)",
        "a key that wants the PIN again right before each use"),
       ("a successful C_Login earlier in the trace", _OTHER_APPS), "CKR_USER_NOT_LOGGED_IN"),
    _E("SC_ERROR_AUTH_METHOD_BLOCKED", -1212, "The PIN or key is blocked on the card (SW "
       "6983).", ("too many wrong PINs",),
       ("unblock with the PUK or SO PIN (pkcs11-tool --unlock-pin)",), "CKR_PIN_LOCKED"),
    _E("SC_ERROR_UNKNOWN_DATA_RECEIVED", -1213, "The card's answer is too short or cannot be "
       "parsed.", ("a driver/card mismatch or a transmission problem",), (_DEBUG,), _GEN),
    _E("SC_ERROR_PIN_CODE_INCORRECT", -1214, "The card rejected the PIN or key (SW 63Cx, x = "
       "tries left).",
       ("the wrong PIN, or the right digits in the wrong encoding",),
       ("the tries left in the 63Cx status word of the debug log",), "CKR_PIN_INCORRECT"),
    _E("SC_ERROR_FILE_ALREADY_EXISTS", -1215, "A file or application with that id or name "
       "already exists on the card (SW 6A89, 6A8A).", (), (), _GEN),
    _E("SC_ERROR_DATA_OBJECT_NOT_FOUND", -1216, "The card does not have the key, PIN or data "
       "object the command refers to (SW 6A88).", ("a wrong key reference or slot",), (), _GEN),
    _E("SC_ERROR_NOT_ENOUGH_MEMORY", -1217, "The card has no room left (SW 6A84).",
       ("too many objects on the card",), ("remove unused objects: pkcs11-tool -O",),
       "CKR_DEVICE_MEMORY"),
    _E("SC_ERROR_CORRUPTED_DATA", -1218, "The card says part of what it returned may be "
       "damaged (SW 6281).", ("a failing card",), ("back up and replace the card",), _GEN),
    _E("SC_ERROR_FILE_END_REACHED", -1219, "The file or record ended before the requested "
       "number of bytes (SW 6282).", ("often harmless: a driver reading more than is there",),
       (), _GEN),
    _E("SC_ERROR_REF_DATA_NOT_USABLE", -1220, "The key or PIN the command refers to cannot be "
       "used (SW 6984).", ("a PIN never set, or a key invalidated",), (), _GEN),
    # --- arguments -----------------------------------------------------------------------
    _E("SC_ERROR_INVALID_ARGUMENTS", -1300, "OpenSC was called with bad arguments.",
       ("a bug in the caller or in an OpenSC driver",), (), "CKR_ARGUMENTS_BAD"),
    _E("SC_ERROR_BUFFER_TOO_SMALL", -1303, "An output buffer was too small.", (), (),
       "CKR_BUFFER_TOO_SMALL"),
    _E("SC_ERROR_INVALID_PIN_LENGTH", -1304, "The PIN is shorter or longer than the card's PIN "
       "object allows.", ("a PIN of the wrong length, or a newline appended to it",),
       ("the PIN length in the trace against the token's min/max PIN length",),
       "CKR_PIN_LEN_RANGE", "C_GenerateKeyPair turns it into CKR_GENERAL_ERROR instead."),
    _E("SC_ERROR_INVALID_DATA", -1305, "The input data is malformed.", (), (),
       "CKR_DATA_INVALID"),
    # --- internal ------------------------------------------------------------------------
    _E("SC_ERROR_INTERNAL", -1400, "OpenSC found an inconsistency in itself.",
       ("a bug in OpenSC or one of its drivers",), ("try a newer OpenSC version",), _GEN),
    _E("SC_ERROR_INVALID_ASN1_OBJECT", -1401, "ASN.1 data could not be parsed.",
       ("a corrupt certificate or PKCS#15 file on the card",), (_DEBUG,), _GEN),
    _E("SC_ERROR_ASN1_OBJECT_NOT_FOUND", -1402, "An ASN.1 element that must be there is "
       "missing.", (), (), _GEN),
    _E("SC_ERROR_ASN1_END_OF_CONTENTS", -1403, "ASN.1 data ended too early.",
       ("truncated data on the card or a short read",), (), _GEN),
    _E("SC_ERROR_OUT_OF_MEMORY", -1404, "The host ran out of memory.", (), (),
       "CKR_HOST_MEMORY"),
    _E("SC_ERROR_TOO_MANY_OBJECTS", -1405, "A table of objects in OpenSC is full.", (), (),
       _GEN),
    _E("SC_ERROR_OBJECT_NOT_VALID", -1406, "An object failed validation.", (), (), _GEN),
    _E("SC_ERROR_OBJECT_NOT_FOUND", -1407, "The requested object does not exist on the card "
       "or in the driver.", (), (), _GEN),
    _E("SC_ERROR_NOT_SUPPORTED", -1408, "The card or driver does not support this operation.",
       ("very common in logs and often harmless: OpenSC tries and falls back",), (),
       "CKR_FUNCTION_NOT_SUPPORTED"),
    _E("SC_ERROR_PASSPHRASE_REQUIRED", -1409, "OpenSC needs a passphrase to go on.", (), (), _GEN),
    _E("SC_ERROR_INCONSISTENT_CONFIGURATION", -1410, "Settings in opensc.conf contradict each "
       "other.", (), ("the file named by OPENSC_CONF, or the default opensc.conf",), _GEN),
    _E("SC_ERROR_DECRYPT_FAILED", -1411, "The card or driver could not decrypt the data.", (),
       (), _GEN),
    _E("SC_ERROR_WRONG_PADDING", -1412, "The padding was wrong after an RSA operation.",
       ("the wrong key, or damaged data",), (), "CKR_ENCRYPTED_DATA_INVALID",
       "Mapped so since OpenSC 0.23; older versions return CKR_GENERAL_ERROR."),
    _E("SC_ERROR_WRONG_CARD", -1413, "The card is not the one the driver or tool expects.",
       ("a driver forced in opensc.conf, or a tool for another card",),
       ("opensc-tool -n",), "CKR_TOKEN_NOT_RECOGNIZED"),
    _E("SC_ERROR_CANNOT_LOAD_MODULE", -1414, "An external driver or module could not be "
       "loaded.", ("a path in opensc.conf that is wrong, or a missing library",),
       ("ldd on the module named in opensc.conf",), _GEN),
    _E("SC_ERROR_OFFSET_TOO_LARGE", -1415, "The file offset is larger than the card's read or "
       "update commands can address.", (), (), _GEN),
    _E("SC_ERROR_NOT_IMPLEMENTED", -1416, "This function is not implemented in OpenSC or the "
       "driver.", (), (), _GEN),
    _E("SC_ERROR_INVALID_TLV_OBJECT", -1417, "Simple-TLV data could not be parsed.", (), (),
       _GEN),
    _E("SC_ERROR_TLV_END_OF_CONTENTS", -1418, "Simple-TLV data ended too early.", (), (), _GEN),
    # --- card personalization (pkcs15-init) ----------------------------------------------
    _E("SC_ERROR_PKCS15INIT", -1500, "Personalizing the card failed, with no detail.", (),
       (_INIT,), _GEN),
    _E("SC_ERROR_SYNTAX_ERROR", -1501, "A profile or configuration file has a syntax error.",
       (), ("the file named in the debug log",), _GEN),
    _E("SC_ERROR_INCONSISTENT_PROFILE", -1502, "The pkcs15-init profile is incomplete or "
       "contradicts itself.", (), (_INIT,), _GEN),
    _E("SC_ERROR_INCOMPATIBLE_KEY", -1503, "The card does not support this key size or "
       "algorithm.", (), ("the key sizes the card supports",), _GEN),
    _E("SC_ERROR_NO_DEFAULT_KEY", -1504, "No default (transport) key is available.", (),
       (_INIT,), _GEN),
    _E("SC_ERROR_NON_UNIQUE_ID", -1505, "An object with that ID already exists.", (),
       ("choose another --id, or delete the old object",), _GEN),
    _E("SC_ERROR_CANNOT_LOAD_KEY", -1506, "The key or certificate file to import could not be "
       "read.", ("a wrong path, format or password",), (), _GEN),
    _E("SC_ERROR_TEMPLATE_NOT_FOUND", -1508, "The profile has no file template for this.", (),
       (_INIT,), _GEN),
    _E("SC_ERROR_INVALID_PIN_REFERENCE", -1509, "The PIN reference is not valid for this "
       "card.", (), (_INIT,), _GEN),
    _E("SC_ERROR_FILE_TOO_SMALL", -1510, "The file on the card is too small for the data.", (),
       (_INIT,), _GEN),
    # --- secure messaging ----------------------------------------------------------------
    _E("SC_ERROR_SM", -1600, "Secure messaging with the card failed, with no detail.", (),
       (_SM,), _GEN),
    _E("SC_ERROR_SM_ENCRYPT_FAILED", -1601, "Encrypting a command for secure messaging "
       "failed.", (), (_SM,), _GEN),
    _E("SC_ERROR_SM_INVALID_LEVEL", -1602, "The secure messaging level asked for is not "
       "supported.", (), (_SM,), _GEN),
    _E("SC_ERROR_SM_NO_SESSION_KEYS", -1603, "There are no secure messaging session keys.", (),
       (_SM,), _GEN),
    _E("SC_ERROR_SM_INVALID_SESSION_KEY", -1604, "The secure messaging session keys are not "
       "valid.", (), (_SM,), _GEN),
    _E("SC_ERROR_SM_NOT_INITIALIZED", -1605, "The secure messaging channel was not set up.",
       (), (_SM,), _GEN),
    _E("SC_ERROR_SM_AUTHENTICATION_FAILED", -1606, "OpenSC and the card could not "
       "authenticate each other.", ("wrong keys for this card, or a card that is not genuine",),
       (_SM,), _GEN),
    _E("SC_ERROR_SM_RAND_FAILED", -1607, "Generating a random number for secure messaging "
       "failed.", (), (_SM,), _GEN),
    _E("SC_ERROR_SM_KEYSET_NOT_FOUND", -1608, "The secure messaging key set is not configured "
       "or not found.", (), ("the secure messaging settings in opensc.conf",), _GEN),
    _E("SC_ERROR_SM_IFD_DATA_MISSING", -1609, "The host-side data for secure messaging is "
       "missing.", (), (_SM,), _GEN),
    _E("SC_ERROR_SM_NOT_APPLIED", -1610, "The driver chose not to wrap this command; it goes "
       "to the card unprotected.", ("normal inside OpenSC: not an error there",), (), _GEN),
    _E("SC_ERROR_SM_SESSION_ALREADY_ACTIVE", -1611, "A secure messaging session is already "
       "open.", (), (), _GEN),
    _E("SC_ERROR_SM_INVALID_CHECKSUM", -1612, "The checksum (MAC) of the card's protected "
       "answer is wrong.", ("a transmission problem, or keys out of step",), (_SM,), _GEN),
    # --- other ---------------------------------------------------------------------------
    _E("SC_ERROR_UNKNOWN", -1900, "An error of unknown origin (also what OpenSC prints for "
       "numbers it does not know).", (), (_DEBUG,), _GEN),
    _E("SC_ERROR_PKCS15_APP_NOT_FOUND", -1901, "The card has no PKCS#15 application and no "
       "OpenSC emulator fits it.",
       ("a blank or unsupported card", "a card OpenSC supports only with another driver"),
       ("opensc-tool -n; pkcs15-tool -D",), _GEN),
)
