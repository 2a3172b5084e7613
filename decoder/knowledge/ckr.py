"""What each PKCS#11 return value (CKR_*) means to someone debugging a client.

Only texts, keyed by name: the names and numbers are the project's constant table
(p11spy.facts.pkcs11.constants.FAMILIES["CKR"]), so there is one list of CKR numbers. A test checks
that every name there has a text here and that nothing here is missing from it.
"""

from __future__ import annotations

from p11spy.decoder.knowledge import Text

_BUG = "a bug in the calling program"
_TRACE_ARGS = "the arguments of this call in the trace"
_HANDLE_ORIGIN = "where the handle came from earlier in the trace (and whether it was closed)"
_STALE = "a handle kept after its session closed, a logout, or the token being reinserted"
_DEBUG_LOG = "the module's own debug log (OpenSC: OPENSC_DEBUG=9) for the card's real answer"
_MECHS = "what the token supports: pkcs11-tool --module <module> -M"
_LEGACY = "nothing to fix on the token; the calling program uses an obsolete part of the API"

CKR: dict[str, Text] = {
    "CKR_OK": Text("The call worked."),
    "CKR_CANCEL": Text(
        "The application's notification callback told the module to stop the operation.",
        ("the application (or its user) gave up on purpose",),
        ("the application's own log for why it cancelled",)),
    "CKR_HOST_MEMORY": Text(
        "The module could not get memory on this computer.",
        ("the process is out of memory or hit a limit (ulimit, cgroup, container)",
         "a leak in a long-running client"),
        ("free memory and the process's limits", "whether the process keeps growing")),
    "CKR_SLOT_ID_INVALID": Text(
        "The slot number passed does not name a slot that exists now.",
        ("slot numbers moved after a reader was plugged, unplugged, or pcscd restarted",
         "a slot number written into a configuration (Java slot=, a script) no longer fits"),
        ("the slots that exist now: pkcs11-tool --module <module> -L",
         "choose the token by label instead of slot number where the client allows it")),
    "CKR_GENERAL_ERROR": Text(
        "Something failed inside the module and it gave no detail.",
        ("OpenSC: a card or reader problem for which it has no better code",
         "the module could not start (missing configuration, no reader, no service)",
         "p11spy returns it when P11SPY_MODULE is unset, wrong, or not a PKCS#11 module"),
        (_DEBUG_LOG,
         "the client's stderr for a one-line p11spy message naming a setting",
         "pcscd runs and sees the reader and card: pcsc_scan")),
    "CKR_FUNCTION_FAILED": Text(
        "The operation could not be done and the module has no more precise code.",
        ("the card refused the command in its current state (OpenSC: signing or decrypting "
         "was not allowed)",
         "the key or the card's access rules do not allow this use",
         "the card's application failed internally"),
        (_DEBUG_LOG,
         "the key's attributes (CKA_SIGN, CKA_DECRYPT, CKA_ALWAYS_AUTHENTICATE)")),
    "CKR_ARGUMENTS_BAD": Text(
        "An argument is not acceptable, e.g. a NULL pointer where data is required.",
        (_BUG, "a client written for another PKCS#11 version than the module"),
        (_TRACE_ARGS + " (NULL pointers, zero lengths)",)),
    "CKR_NO_EVENT": Text(
        "No slot event is waiting (C_WaitForSlotEvent asked not to block).",
        ("nothing was inserted or removed since the last poll; this is normal",)),
    "CKR_NEED_TO_CREATE_THREADS": Text(
        "The module needs threads of its own but the application forbade creating them.",
        ("C_Initialize was given CKF_LIBRARY_CANT_CREATE_OS_THREADS and the module needs "
         "threads",),
        ("the flags of C_Initialize in the trace",)),
    "CKR_CANT_LOCK": Text(
        "The module cannot do the kind of locking the application asked for in C_Initialize.",
        ("the application asked for OS locking, or gave its own mutex functions, and the "
         "module supports neither",),
        ("the arguments of C_Initialize in the trace",)),
    "CKR_ATTRIBUTE_READ_ONLY": Text(
        "The template tries to set or change an attribute that cannot be changed.",
        ("C_SetAttributeValue, C_CopyObject or C_CreateObject touching a fixed attribute",
         "the token only accepts that attribute when the object is created"),
        ("which attribute of the template it is; set it at creation or leave it out",)),
    "CKR_ATTRIBUTE_SENSITIVE": Text(
        "The token will not reveal this attribute's value.",
        ("reading the value of a private or secret key (CKA_SENSITIVE true or "
         "CKA_EXTRACTABLE false)",
         "often harmless: tools ask for every attribute and carry on"),
        ("which attribute C_GetAttributeValue asked for; the client may only be probing",)),
    "CKR_ATTRIBUTE_TYPE_INVALID": Text(
        "The template names an attribute this object or token does not know.",
        ("asking for an attribute the object does not have (often harmless probing)",
         "a vendor attribute or one from a newer PKCS#11 version"),
        ("the attribute types in the template",)),
    "CKR_ATTRIBUTE_VALUE_INVALID": Text(
        "An attribute in the template has a value the token will not accept.",
        ("wrong length or encoding (CKA_EC_PARAMS, CKA_MODULUS_BITS, CKA_ID)",
         "a label or ID too long for the card",
         "a key size or option the card does not support"),
        ("the values in the template against " + _MECHS,)),
    "CKR_ACTION_PROHIBITED": Text(
        "A policy forbids this action on this object.",
        ("the object's attributes or the token's policy forbid copying, changing, deleting "
         "or exporting it",),
        ("the object's CKA_COPYABLE, CKA_MODIFIABLE and CKA_DESTROYABLE, and the HSM policy",)),
    "CKR_DATA_INVALID": Text(
        "The input data is not acceptable for this mechanism.",
        ("data the mechanism cannot take, e.g. raw RSA input larger than the modulus",
         "OpenSC: the card rejected the data of a command (SW 6A80 and similar)"),
        ("the mechanism and the input length in the trace", _DEBUG_LOG)),
    "CKR_DATA_LEN_RANGE": Text(
        "The input data has the wrong length for this mechanism.",
        ("too much data for a single RSA operation",
         "a block cipher without padding given a length that is not a whole number of blocks",
         "OpenSC: the card reported a wrong length (SW 6700 or 6Cxx)"),
        ("the input length against the key size and the mechanism",)),
    "CKR_DEVICE_ERROR": Text(
        "The token or reader reported a hardware or communication fault.",
        ("bad card contact, a flaky USB reader, cable or hub",
         "the card does not answer, or another program holds it exclusively",
         "a memory failure on the card"),
        ("reseat the card or token; try a USB port without a hub",
         "pcsc_scan: is the card seen, does it give an ATR",
         "other programs holding the card (gpg-agent/scdaemon, a browser, another client)")),
    "CKR_DEVICE_MEMORY": Text(
        "The token does not have enough memory for this request.",
        ("the card is full of keys, certificates or data objects",
         "the object is larger than the card can store"),
        ("list the objects and remove unused ones: pkcs11-tool --module <module> -O",)),
    "CKR_DEVICE_REMOVED": Text(
        "The token was removed while the function was running.",
        ("card pulled or token unplugged",
         "a loose USB connection, or the host suspended the USB port",
         "the reader was reset or pcscd restarted"),
        ("the system log (dmesg, journalctl -u pcscd) for USB disconnects at that time",
         "USB power saving (autosuspend) for the reader")),
    "CKR_ENCRYPTED_DATA_INVALID": Text(
        "The ciphertext is not valid, e.g. its padding is wrong after decryption.",
        ("decrypting with the wrong key", "damaged data",
         "data encrypted with another mechanism or padding"),
        ("that the data was encrypted for this key, with the same mechanism",)),
    "CKR_ENCRYPTED_DATA_LEN_RANGE": Text(
        "The ciphertext has a length the mechanism cannot accept.",
        ("truncated or padded ciphertext",
         "an RSA ciphertext whose length is not the key's length"),
        ("the ciphertext length against the key and block size",)),
    "CKR_AEAD_DECRYPT_FAILED": Text(
        "Authenticated decryption (e.g. AES-GCM): the authentication tag did not verify.",
        ("data, associated data, nonce or tag changed or wrong", "the wrong key"),
        ("the IV/nonce, associated data and tag length in the mechanism parameter",)),
    "CKR_FUNCTION_CANCELED": Text(
        "The operation was cancelled, e.g. Cancel on a PIN pad or no PIN typed in time.",
        ("the user pressed Cancel on the PIN-pad reader",
         "the user did not type the PIN before the reader's timeout"),
        ("whether the reader has a PIN pad and the user saw the prompt",)),
    "CKR_FUNCTION_NOT_PARALLEL": Text(
        "Obsolete: no function is running in parallel in this session.",
        ("a call to the old parallel-function API (C_GetFunctionStatus, C_CancelFunction)",),
        (_LEGACY,)),
    "CKR_FUNCTION_NOT_SUPPORTED": Text(
        "The module or token does not implement this function.",
        ("the client uses a function the module does not offer (C_DigestKey, "
         "C_GetOperationState, PKCS#11 3.x functions on an older module)",
         "OpenSC: the card's driver cannot do this operation"),
        ("which function it is; many clients fall back and carry on, so it may be harmless",)),
    "CKR_KEY_HANDLE_INVALID": Text(
        "The key handle does not name a valid key.",
        (_STALE, "the key was deleted"),
        (_HANDLE_ORIGIN,)),
    "CKR_KEY_SIZE_RANGE": Text(
        "The key size is outside what the mechanism or the token supports.",
        ("an RSA or EC size the card cannot do", "a key too small for the token's policy"),
        ("the minimum and maximum sizes of each mechanism: pkcs11-tool -M",)),
    "CKR_KEY_TYPE_INCONSISTENT": Text(
        "The key's type does not fit the mechanism.",
        ("e.g. an EC key with an RSA mechanism, or an AES key with a DES mechanism",
         "the client picked another key that shares the label or ID"),
        ("the key's CKA_KEY_TYPE against the mechanism in the trace",
         "duplicate labels or IDs on the token: pkcs11-tool -O")),
    "CKR_KEY_NOT_NEEDED": Text(
        "A key was passed to an operation that takes none.",
        (_BUG + " (e.g. C_SetOperationState given a key it does not need)",)),
    "CKR_KEY_CHANGED": Text(
        "A saved operation state is being restored with a different key than it was saved with.",
        ("C_SetOperationState given another key",)),
    "CKR_KEY_NEEDED": Text(
        "Restoring this saved operation state needs a key, and none was given.",
        ("C_SetOperationState without the key handles it needs",)),
    "CKR_KEY_INDIGESTIBLE": Text(
        "This key's value cannot be fed into a digest (C_DigestKey).",
        ("the key is sensitive, or of a type the token cannot digest",)),
    "CKR_KEY_FUNCTION_NOT_PERMITTED": Text(
        "The key's attributes forbid this use.",
        ("signing with a key whose CKA_SIGN is false, decrypting with CKA_DECRYPT false, ...",
         "the key was generated or imported with the wrong usage",
         "the client picked another key that shares the label or ID"),
        ("the key's usage: pkcs11-tool -O shows it per key",
         "generate or import the key again with the right usage")),
    "CKR_KEY_NOT_WRAPPABLE": Text(
        "The key cannot be wrapped with this wrapping key or mechanism.",
        ("the key may only be wrapped by a trusted key (CKA_WRAP_WITH_TRUSTED) and this one "
         "is not trusted",
         "the mechanism cannot wrap this type of key"),
        ("CKA_WRAP_WITH_TRUSTED on the key and CKA_TRUSTED on the wrapping key",)),
    "CKR_KEY_UNEXTRACTABLE": Text(
        "The key may never leave the token, so wrapping or exporting it is refused.",
        ("CKA_EXTRACTABLE is false: the key is meant to stay on the token",),
        ("whether the export is really needed; if so the key must be created extractable",)),
    "CKR_MECHANISM_INVALID": Text(
        "The token does not know this mechanism, or does not allow it with this function.",
        ("the token lacks the algorithm (RSA-PSS, SHA-512, an EC operation, ...)",
         "a mechanism used with the wrong function, e.g. a digest mechanism for signing"),
        (_MECHS + "; compare with the mechanism in the trace",
         "the client's algorithm settings (cipher suites, signature algorithms)")),
    "CKR_MECHANISM_PARAM_INVALID": Text(
        "The mechanism's parameters are wrong.",
        ("bad IV length, wrong PSS/OAEP hash or salt length, a missing parameter",
         "a parameter structure of another PKCS#11 version"),
        ("the mechanism parameter in the trace",)),
    "CKR_OBJECT_HANDLE_INVALID": Text(
        "The object handle does not name a valid object.",
        (_STALE, "the object was deleted"),
        (_HANDLE_ORIGIN,)),
    "CKR_OPERATION_ACTIVE": Text(
        "Another operation of this kind is already running in this session.",
        ("an earlier operation was started (e.g. C_SignInit) and never finished",
         "two threads share one session"),
        ("the calls before it in the same session: an Init without its final call",
         "the tid column: several threads using one session handle")),
    "CKR_OPERATION_NOT_INITIALIZED": Text(
        "The operation was not started with its Init call first.",
        ("C_Sign, C_Decrypt, ... without C_SignInit, C_DecryptInit, ... in that session",
         "the Init call failed and the client went on anyway",
         "an earlier error ended the operation and the client retried only the last step"),
        ("the Init call before it in the trace, and what it returned",)),
    "CKR_PIN_INCORRECT": Text(
        "The token rejected the PIN.",
        ("the PIN is wrong (user PIN vs SO PIN, or the PIN of another token)",
         "right digits in the wrong encoding: EBCDIC (F0-F9) instead of ASCII (30-39), "
         "UTF-16, or a trailing newline or space",
         "the client took the PIN from the wrong place (stash file, configuration, variable)"),
        ("the masked PIN in the trace: its length and its character class (ASCII digits?)",
         "how many tries are left: the card's 63Cx status word (OPENSC_DEBUG) or the token "
         "flags (CKF_USER_PIN_COUNT_LOW, CKF_USER_PIN_FINAL_TRY)",
         "stop automatic retries: each one uses a try, and the PIN will block")),
    "CKR_PIN_INVALID": Text(
        "The PIN contains characters the token does not accept.",
        ("letters or symbols in a digits-only PIN",
         "OpenSC: the two entries on the PIN pad did not match"),
        ("the PIN's character class in the trace", "the token's PIN rules")),
    "CKR_PIN_LEN_RANGE": Text(
        "The PIN is too short or too long for this token.",
        ("a PIN outside the token's minimum and maximum length",
         "a newline or padding appended to the PIN"),
        ("the PIN length in the trace against ulMinPinLen/ulMaxPinLen of C_GetTokenInfo",)),
    "CKR_PIN_EXPIRED": Text(
        "The PIN has expired and must be changed before the token can be used.",
        ("the token's policy forces a change (first use, or the PIN is too old)",),
        ("change it with the token's tool, e.g. pkcs11-tool --change-pin",)),
    "CKR_PIN_LOCKED": Text(
        "The PIN is blocked after too many wrong tries.",
        ("repeated wrong PINs, often a service retrying with a bad stored PIN at each start",
         "OpenSC: the card answered 6983 (authentication method blocked)"),
        ("unblock it with the SO PIN or PUK (pkcs11-tool --unlock-pin, or the vendor's tool)",
         "fix the stored PIN first, or the next start blocks it again")),
    "CKR_SESSION_CLOSED": Text(
        "The session was closed while the call was running.",
        ("another thread called C_CloseSession or C_CloseAllSessions", "the token was removed"),
        ("other threads' calls at that moment in the trace",)),
    "CKR_SESSION_COUNT": Text(
        "The token will not open any more sessions.",
        ("a client that opens sessions and never closes them",
         "many processes sharing a token or HSM partition with a session limit"),
        ("C_OpenSession against C_CloseSession counts in the trace",
         "ulSessionCount and ulMaxSessionCount from C_GetTokenInfo")),
    "CKR_SESSION_HANDLE_INVALID": Text(
        "The session handle is not valid: closed, or never opened.",
        ("a session used after C_CloseSession, C_Finalize or removal of the token",
         "a session opened by the parent process before fork()"),
        ("where this handle was opened and closed in the trace",
         "the pid column: was the session opened in another process")),
    "CKR_SESSION_PARALLEL_NOT_SUPPORTED": Text(
        "Obsolete: parallel sessions do not exist; C_OpenSession needs CKF_SERIAL_SESSION.",
        ("C_OpenSession without CKF_SERIAL_SESSION in its flags",),
        ("the flags of C_OpenSession in the trace",)),
    "CKR_SESSION_READ_ONLY": Text(
        "A write was attempted in a read-only session.",
        ("creating, changing or deleting an object, or generating a stored key, in a session "
         "opened without CKF_RW_SESSION",),
        ("the flags of the C_OpenSession that opened this session",)),
    "CKR_SESSION_EXISTS": Text(
        "A session is open, so the token cannot be initialized.",
        ("C_InitToken while this or another application has a session on the token",),
        ("close other programs using the token (browsers, agents) before initializing",)),
    "CKR_SESSION_READ_ONLY_EXISTS": Text(
        "The security officer cannot log in while a read-only session is open.",
        ("C_Login as CKU_SO with a read-only session open in this application",),
        ("open read/write sessions when the SO logs in",)),
    "CKR_SESSION_READ_WRITE_SO_EXISTS": Text(
        "A read-only session cannot be opened while the security officer is logged in.",
        ("C_OpenSession without CKF_RW_SESSION after an SO login",)),
    "CKR_SIGNATURE_INVALID": Text(
        "The signature does not verify.",
        ("the data changed", "the wrong key or certificate",
         "a different hash or padding (PKCS#1 v1.5 vs PSS)"),
        ("that signer and verifier use the same key pair and mechanism",)),
    "CKR_SIGNATURE_LEN_RANGE": Text(
        "The signature has the wrong length, so it cannot be valid.",
        ("a truncated signature, or one made with a key of another size",
         "an ECDSA signature in DER form where raw r||s was expected"),
        ("the signature length against the key size",)),
    "CKR_TEMPLATE_INCOMPLETE": Text(
        "The template lacks attributes the new object needs.",
        ("creating or generating without e.g. CKA_CLASS, CKA_KEY_TYPE, CKA_EC_PARAMS or "
         "CKA_MODULUS_BITS",),
        ("the template in the trace against what this type of object requires",)),
    "CKR_TEMPLATE_INCONSISTENT": Text(
        "Attributes in the template contradict each other or the token's rules.",
        ("attributes that do not belong to this class of object",
         "a card restriction, e.g. private keys must be sensitive or private"),
        ("the template in the trace, one attribute at a time",)),
    "CKR_TOKEN_NOT_PRESENT": Text(
        "There is no token in the slot.",
        ("card not inserted, or token unplugged",
         "the reader is gone (USB unplugged, pcscd restarted)",
         "the client uses a slot that is an empty reader"),
        ("which slots have a token: pkcs11-tool -L, pcsc_scan",
         "pcscd is running: systemctl status pcscd.socket")),
    "CKR_TOKEN_NOT_RECOGNIZED": Text(
        "A token is there, but the module cannot handle it.",
        ("a card type this module or version does not support",
         "a blank card that was never personalized",
         "OpenSC: a driver forced in opensc.conf that does not fit this card"),
        ("the card's name and the drivers: opensc-tool -n, opensc-tool --list-drivers",
         "card_drivers and forced drivers in opensc.conf")),
    "CKR_TOKEN_WRITE_PROTECTED": Text(
        "The token is write-protected, so the write was refused.",
        ("a read-only token, or a module configured read-only",),
        ("CKF_WRITE_PROTECTED in the token flags: pkcs11-tool -L",)),
    "CKR_UNWRAPPING_KEY_HANDLE_INVALID": Text(
        "The handle of the unwrapping key is not valid.",
        (_STALE,), (_HANDLE_ORIGIN,)),
    "CKR_UNWRAPPING_KEY_SIZE_RANGE": Text(
        "The unwrapping key's size is not supported for this operation.",
        checks=(_MECHS,)),
    "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT": Text(
        "The unwrapping key's type does not fit the mechanism.",
        ("e.g. an AES key with an RSA unwrapping mechanism",)),
    "CKR_USER_ALREADY_LOGGED_IN": Text(
        "This user is already logged in.",
        ("the client logs in twice: a login counts for all sessions of the application",
         "usually harmless; most clients ignore it"),
        ("earlier C_Login calls of the same process",)),
    "CKR_USER_NOT_LOGGED_IN": Text(
        "The operation needs a login first.",
        ("no C_Login before using a private key or private objects",
         "the login was lost: token reinserted, card reset by another program, or C_Logout",
         "OpenSC: the card answered 6982 (security status not satisfied), e.g. a key that "
         "wants the PIN again right before each use"),
        ("a successful C_Login earlier in the same process",
         "CKA_ALWAYS_AUTHENTICATE on the key: it needs C_Login with CKU_CONTEXT_SPECIFIC "
         "before every use")),
    "CKR_USER_PIN_NOT_INITIALIZED": Text(
        "The user PIN has never been set.",
        ("the token was initialized but C_InitPIN was never done",
         "the card has no usable PIN object"),
        ("CKF_USER_PIN_INITIALIZED in the token flags: pkcs11-tool -L",
         "set it: pkcs11-tool --init-pin --login --so-pin <SO PIN> --new-pin <PIN>")),
    "CKR_USER_TYPE_INVALID": Text(
        "The user type is not SO, user or context-specific.",
        (_BUG,), ("the userType argument of C_Login in the trace",)),
    "CKR_USER_ANOTHER_ALREADY_LOGGED_IN": Text(
        "A different user (SO or normal user) is already logged in.",
        ("the SO is logged in and the client logs in as user, or the other way round",),
        ("earlier C_Login calls and their user types",)),
    "CKR_USER_TOO_MANY_TYPES": Text(
        "Too many different users are logged in to the token at once.",
        checks=("log the other users or applications out",)),
    "CKR_WRAPPED_KEY_INVALID": Text(
        "The wrapped key is not valid.",
        ("damaged data, or wrapped with another key or mechanism",)),
    "CKR_WRAPPED_KEY_LEN_RANGE": Text(
        "The wrapped key has a length that cannot be right.",
        ("truncated or padded data",)),
    "CKR_WRAPPING_KEY_HANDLE_INVALID": Text(
        "The handle of the wrapping key is not valid.",
        (_STALE,), (_HANDLE_ORIGIN,)),
    "CKR_WRAPPING_KEY_SIZE_RANGE": Text(
        "The wrapping key's size is not supported for this operation.",
        checks=(_MECHS,)),
    "CKR_WRAPPING_KEY_TYPE_INCONSISTENT": Text(
        "The wrapping key's type does not fit the mechanism.",
        ("e.g. an RSA key with an AES key-wrap mechanism",)),
    "CKR_RANDOM_SEED_NOT_SUPPORTED": Text(
        "The token's random generator cannot be seeded.",
        ("C_SeedRandom on a token that takes no seed; clients usually carry on",)),
    "CKR_RANDOM_NO_RNG": Text(
        "The token cannot make random numbers: it has no generator.",
        ("C_GenerateRandom or C_SeedRandom on a token without one",)),
    "CKR_DOMAIN_PARAMS_INVALID": Text(
        "The domain parameters (e.g. the EC curve) are invalid or not supported.",
        ("a curve the token does not know",
         "CKA_EC_PARAMS encoded in a form the token does not take (OID, name, explicit)"),
        ("the CKA_EC_PARAMS value in the template",)),
    "CKR_CURVE_NOT_SUPPORTED": Text(
        "The token does not support this elliptic curve.",
        ("e.g. a Brainpool or P-521 key on a card that only has P-256 and P-384",),
        ("the token's documentation and " + _MECHS,)),
    "CKR_BUFFER_TOO_SMALL": Text(
        "The output buffer is too small; the length needed is returned.",
        ("normally part of the two-call convention: the client asks again with a larger "
         "buffer",
         "a problem only when the client does not retry"),
        ("whether the next call retries with the length returned",)),
    "CKR_SAVED_STATE_INVALID": Text(
        "The saved state given to C_SetOperationState is not valid.",
        ("a state saved on another token, module version or kind of session",)),
    "CKR_INFORMATION_SENSITIVE": Text(
        "The information asked for is sensitive, so it is not returned.",
        ("C_GetOperationState on an operation whose state would reveal secrets",)),
    "CKR_STATE_UNSAVEABLE": Text(
        "The state of this operation cannot be saved.",
        ("C_GetOperationState for an operation the token cannot export",)),
    "CKR_CRYPTOKI_NOT_INITIALIZED": Text(
        "C_Initialize has not been called, or C_Finalize has already been called.",
        ("the client calls functions before C_Initialize",
         "another component of the same process called C_Finalize on the shared module",
         "a child process after fork() uses the module state of its parent"),
        ("C_Initialize and C_Finalize in the trace, with their pid and tid",)),
    "CKR_CRYPTOKI_ALREADY_INITIALIZED": Text(
        "C_Initialize was called a second time in this process.",
        ("two components of one process load the same module (e.g. an OpenSSL engine and "
         "the application); usually harmless",),
        ("which component calls C_Initialize the second time; it should accept this code",)),
    "CKR_MUTEX_BAD": Text(
        "A bad mutex object was passed to a locking function.",
        ("a bug in the application's locking functions given to C_Initialize",)),
    "CKR_MUTEX_NOT_LOCKED": Text(
        "A mutex was unlocked that was not locked.",
        ("a bug in the application's or the module's locking",)),
    "CKR_NEW_PIN_MODE": Text(
        "The token wants a new PIN to be set (one-time-password tokens).",
        checks=("follow the token vendor's procedure for setting a new PIN",)),
    "CKR_NEXT_OTP": Text(
        "The token wants the next one-time password.",
        ("the one-time-password token is out of step",),
        ("give the next OTP value",)),
    "CKR_EXCEEDED_MAX_ITERATIONS": Text(
        "An iterative algorithm (e.g. generating a key) gave up after its maximum number of "
        "tries.",
        checks=("retry; if it keeps failing, suspect the token",)),
    "CKR_FIPS_SELF_TEST_FAILED": Text(
        "A FIPS self-test of the token failed.",
        ("a hardware fault, tampering, or damaged firmware",),
        ("the HSM's own logs and health status; contact the vendor",)),
    "CKR_LIBRARY_LOAD_FAILED": Text(
        "A library the module depends on could not be loaded.",
        ("a missing shared library", "a 32/64-bit mismatch",
         "a vendor runtime or configuration that is not installed"),
        ("ldd <module> for 'not found'", "LD_LIBRARY_PATH in the client's environment")),
    "CKR_PIN_TOO_WEAK": Text(
        "The new PIN is too weak for the token's PIN policy.",
        ("too short, too simple, or used before",), ("the token's PIN rules",)),
    "CKR_PUBLIC_KEY_INVALID": Text(
        "The public key failed validation.",
        ("a malformed key: an EC point not on the curve, a bad RSA modulus",)),
    "CKR_FUNCTION_REJECTED": Text(
        "The operation was refused, e.g. the user did not confirm it on the device.",
        ("the user declined, or did not touch the button, on a token that asks for "
         "confirmation",),
        ("whether the device asked for confirmation and timed out",)),
    "CKR_TOKEN_RESOURCE_EXCEEDED": Text(
        "The token ran out of some internal resource.",
        ("too many objects, sessions or counters in use",),
        ("free resources on the token; restart the clients holding sessions",)),
    "CKR_OPERATION_CANCEL_FAILED": Text(
        "C_SessionCancel could not cancel the running operation.",
        ("the operation was too far along, or the token cannot cancel it",)),
    "CKR_KEY_EXHAUSTED": Text(
        "The key has reached its usage limit.",
        ("a stateful hash-based signature key (XMSS, LMS) used up, or a usage-count limit",),
        ("replace the key",)),
    "CKR_PENDING": Text(
        "An asynchronous operation is still running.",
        ("normal in an asynchronous session: the client asks again later",)),
    "CKR_SESSION_ASYNC_NOT_SUPPORTED": Text(
        "This session cannot run operations asynchronously.",
        ("the client asked for asynchronous operation from a module that does not offer it",)),
    "CKR_SEED_RANDOM_REQUIRED": Text(
        "The random generator must be seeded before it can be used.",
        checks=("the client must call C_SeedRandom first",)),
    "CKR_OPERATION_NOT_VALIDATED": Text(
        "The operation is not validated for the mode the token runs in (e.g. not FIPS "
        "approved).",
        ("an HSM in FIPS mode asked for an algorithm or key size outside its approved list",),
        ("the HSM's mode and its list of approved algorithms",)),
    "CKR_TOKEN_NOT_INITIALIZED": Text(
        "The token is blank: nobody has initialized it yet.",
        ("a new or reset token on which C_InitToken was never done",),
        ("initialize it (pkcs11-tool --init-token, softhsm2-util --init-token); this erases "
         "it",)),
    "CKR_PARAMETER_SET_NOT_SUPPORTED": Text(
        "The parameter set (e.g. of ML-DSA, ML-KEM or SLH-DSA) is not supported.",
        checks=("which parameter sets the token supports",)),
    "CKR_VENDOR_DEFINED": Text(
        "Start of the vendor range: from here up, each module vendor defines its own codes.",
        ("the module returned a code of its own",),
        ("the vendor's documentation for this number",)),
}
