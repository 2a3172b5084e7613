"""What `p11spy diagnose` says about each situation it recognises in a trace.

Texts only, keyed by rule id; the rules that find the situations are in decoder/rules/.
Titles and explanations are templates filled with facts of the trace ({n}, {label}, ...).
`codes` names the codes of the other tables (CKR_*, status words, SCARD_*, SC_ERROR_*, AMQ*,
CTGSK*) that the situation shows up as, so that a finding and `p11spy explain` of one of those
codes tell the same story from one knowledge base. A test checks that every name listed here
is known to decoder/codes.py.
"""

from __future__ import annotations

from typing import NamedTuple


class Advice(NamedTuple):
    severity: str  # "error", "warning" or "info" (the default; a rule may raise or lower it)
    title: str
    explanation: str
    action: str
    codes: tuple[str, ...] = ()
    # when a more specific finding explains this one and takes it in (diagnose's engine,
    # EXPLAINS): what this one adds to that finding's title and explanation
    inside_title: str = ""
    inside: str = ""


# no-pcsc-service's {outcome}: the client needed the service, or worked with another module
NO_PCSC_NEEDED = ("Without it no reader, card or token is seen, and the client goes on to fail "
                  "with 'no slots', 'token not present' or a generic error.")
NO_PCSC_UNUSED = ("The program did not need it: it worked with {other}, which opened a session "
                  "(#{seq}); {modules} only had no card reader to offer, as when p11-kit loads "
                  "every configured module. Harmless, unless the program was meant to use a "
                  "smart card.")
# card-not-recognised's {shows}: a call refused the token, or the slot simply showed none
CARD_REFUSED = "it shows no token (CKR_TOKEN_NOT_RECOGNIZED)"
CARD_UNSEEN = ("its slot shows no token at all: no call fails, the slot list asked for slots "
               "with a token comes back without it")
# where the PIN's bytes are to be seen (pin-encoding's {source}, pin-incorrect's {encoding})
TRACE_PIN_MASKED = ("A p11spy trace keeps only the PIN's length and character class; the same "
                    "run with P11SPY_LOG_SECRETS=1 shows its bytes (then redact the trace "
                    "before sharing).")
TRACE_PIN_CLEAR = ("This trace shows the PIN's bytes in clear: redact it (p11spy redact) "
                   "before sharing it.")
PIN_ASCII = (" The PIN's encoding is not the cause: the trace shows {what}, which is how "
             "tokens expect a PIN.")
PIN_UNSEEN = (" If the digits are right, check their encoding (EBCDIC, UTF-16, a trailing "
              "newline): this trace does not show the PIN's bytes; a p11spy trace of the same "
              "run shows their length and character class without the PIN.")
PIN_SEE_ENCODING = " The PIN-encoding finding shows what is wrong with the bytes sent."

FINDINGS: dict[str, Advice] = {
    "pin-incorrect": Advice(
        "error", "Wrong PIN: {n} failed login(s){tries}",
        "The token refused the PIN {n} time(s). Each refusal uses up one try of the PIN's retry "
        "counter; when it reaches 0 the PIN is blocked and only the PUK or SO PIN can unblock "
        "it.{fall}",
        "Check which PIN the program really sends (configuration file, stash, environment), "
        "not the one you believe it sends; stop automatic retries before the counter runs out."
        "{encoding} The tries left are visible without spending one: pkcs11-tool --list-token-"
        "slots shows 'PIN count low' / 'PIN final try'.",
        ("CKR_PIN_INCORRECT", "63Cx", "SC_ERROR_PIN_CODE_INCORRECT"),
        inside_title=" ({n} failed login(s){tries})",
        inside="The token refused this PIN {n} time(s); each refusal uses up one try of the "
               "PIN's retry counter, and at 0 the PIN is blocked.{fall}"),
    "pin-locked": Advice(
        "error", "PIN blocked{where}",
        "The token answers that the PIN is blocked: the retry counter reached 0, so even the "
        "right PIN is refused now.{after}",
        "Unblock it with the PUK or the security officer's PIN (pkcs11-tool --login "
        "--login-type so --init-pin, or the card's own tool, e.g. pkcs15-tool --unblock-pin), "
        "then fix whatever sent the wrong PIN before retrying.",
        ("CKR_PIN_LOCKED", "6983", "SC_ERROR_AUTH_METHOD_BLOCKED")),
    "pin-length": Advice(
        "error", "{Which} of {length} bytes, outside the token's {min}-{max}",
        "C_GetTokenInfo says this token takes PINs of {min} to {max} bytes, and the program "
        "gave a {which} of {length}. The token takes no PIN of that length.",
        "Look at what the program reads the PIN from: a truncated or padded value, a PIN "
        "meant for another token, or the PUK/SO PIN given as user PIN.",
        ("CKR_PIN_LEN_RANGE", "CKR_PIN_INCORRECT")),
    "pin-encoding": Advice(
        "error", "The PIN's bytes look wrongly encoded: {what}",
        "The PIN handed to {function} is {what}. Tokens compare bytes, and PINs are set as "
        "ASCII, so the right digits in another encoding are a wrong PIN: EBCDIC digits are "
        "F0-F9 where ASCII has 30-39 (a z/OS or ASCII-mode mismatch), UTF-16 puts a 00 byte "
        "after each character, and a PIN read from a file or pipe often keeps its newline. "
        "{source}",
        "Hand the PIN to C_Login as ASCII bytes without terminator: convert from EBCDIC "
        "(z/OS: compile in ASCII mode or translate with __etoa), encode Java/.NET strings as "
        "ASCII not UTF-16, strip the newline of a PIN read from a file (echo -n, tr -d '\\n').",
        ("CKR_PIN_INCORRECT",)),
    "pin-verify-failed": Advice(
        "error", "The card refused the PIN {n} time(s) (VERIFY -> 6300) without saying how many "
        "tries are left",
        "The card answered the PIN with status 6300, 'verification failed' with no count of "
        "tries left, as many cards do instead of 63Cx: the PIN is wrong (or wrongly encoded), "
        "and each refusal used up a try that no trace can show. {module}",
        "Check which PIN the program really sends, and stop automatic retries: this card "
        "gives no warning before it blocks the PIN (6983). Its own management tool, or a "
        "VERIFY without data on a card that answers it, shows the tries left.",
        ("6300", "CKR_PIN_INCORRECT", "CKR_GENERAL_ERROR", "SC_ERROR_PIN_CODE_INCORRECT")),
    "not-logged-in": Advice(
        "error", "{function} needs a login: {why}",
        "The token refused {function} with CKR_USER_NOT_LOGGED_IN: private objects and keys "
        "can be used only in a session whose token is logged in. {detail}",
        "Log in (C_Login with CKU_USER) on the token the operation uses, after opening the "
        "session and before the operation, and keep at least one session of that token open: "
        "closing the last session (or C_Logout, C_CloseAllSessions) ends the login.{more}",
        ("CKR_USER_NOT_LOGGED_IN", "6982", "SC_ERROR_SECURITY_STATUS_NOT_SATISFIED")),
    "already-initialized": Advice(
        "warning", "C_Initialize called again while the library was initialised{where}",
        "The module was already initialised in this process ({first}) and a second "
        "C_Initialize got CKR_CRYPTOKI_ALREADY_INITIALIZED. {detail}",
        "Treat CKR_CRYPTOKI_ALREADY_INITIALIZED as success in the second caller and let only "
        "the first initialiser call C_Finalize; or give each part its own copy of the module "
        "(p11-kit proxy).{more}",
        ("CKR_CRYPTOKI_ALREADY_INITIALIZED",)),
    "not-initialized": Advice(
        "error", "{n} call(s) {when}",
        "Every call except C_GetFunctionList, C_GetInterface(List) and C_Initialize needs a "
        "successful C_Initialize first in the same process. {detail}",
        "Call C_Initialize once before anything else, after a fork again in the child, and "
        "nothing after C_Finalize.",
        ("CKR_CRYPTOKI_NOT_INITIALIZED",)),
    "never-finalized": Advice(
        "info", "C_Finalize never called{who}",
        "The module was initialised ({first}) and the trace ends without C_Finalize{sessions}. "
        "Harmless when the program exits anyway (the system frees everything); in a program "
        "that keeps running, or loads and unloads the module, sessions, logins and card "
        "connections stay held. A trace cut short looks the same.",
        "If the program runs on, call C_CloseSession / C_Finalize when done with the token.",
        ()),
    "sessions-left-open": Advice(
        "warning", "{n} sessions open at once: sessions are opened and not closed",
        "The program opened {opened} sessions and closed {closed}; at {peak_at} it held {n} "
        "at the same time. A program that opens a session per operation and forgets to close "
        "it runs into the token's session limit (CKR_SESSION_COUNT) and keeps memory and card "
        "state held.",
        "Close each session when its work is done (C_CloseSession), or reuse one.",
        ("CKR_SESSION_COUNT",)),
    "no-pcsc-service": Advice(
        "error", "No PC/SC service{used}",
        "The module{modules} could not reach the smart card service: SCardEstablishContext "
        "returned SCARD_E_NO_SERVICE (0x8010001D). {outcome}",
        "{todo}Start the service: systemctl start pcscd.socket (Linux), and check the client "
        "can reach it: PCSCLITE_CSOCK_NAME, containers and snaps need /run/pcscd shared; "
        "pcsc_scan must list the reader.",
        ("SCARD_E_NO_SERVICE", "SC_ERROR_NO_READERS_FOUND")),
    "no-readers": Advice(
        "error", "No smart card reader",
        "The PC/SC service answers but lists no reader{detail}.",
        "Plug the reader in and check pcsc_scan lists it; a reader the service does not know "
        "needs its driver (ifd handler, e.g. libccid).",
        ("SCARD_E_NO_READERS_AVAILABLE", "SC_ERROR_NO_READERS_FOUND")),
    "card-not-recognised": Advice(
        "error", "Card not recognised{atr}",
        "A card is in the reader but the module has no driver for it, so {shows}. {probe}",
        "Check the card is the kind this module supports; with OpenSC, opensc-tool --atr and "
        "opensc-tool -n name the card and its driver, and card_drivers in opensc.conf must "
        "include that driver (a trimmed list leaves cards out). A new card may need a newer "
        "OpenSC or the vendor's own PKCS#11 module.",
        ("CKR_TOKEN_NOT_RECOGNIZED", "SC_ERROR_INVALID_CARD", "SC_ERROR_WRONG_CARD")),
    "card-removed": Advice(
        "error", "Card {what} during the operation{outcome}",
        "The card went away under the module: {detail}. {consequence}",
        "Check that no other program resets the card (another process that connects and "
        "resets it, gpg-agent's scdaemon) and that it stays in (loose contact, a USB token on "
        "a hub that sleeps).{then}",
        ("CKR_DEVICE_REMOVED", "CKR_TOKEN_NOT_PRESENT", "SCARD_W_REMOVED_CARD",
         "SCARD_W_RESET_CARD", "SC_ERROR_CARD_REMOVED", "SC_ERROR_CARD_RESET")),
    "no-token": Advice(
        "error", "No token: the slot list stayed empty",
        "Every C_GetSlotList in this process returned no slots{detail}, so there was no token "
        "to use. A client typically reports this as a token that cannot be found (IBM MQ: "
        "AMQ9669E; runmqakm: CTGSK2137W or CTGSK3026W).",
        "Make the token visible first: pkcs11-tool --module <module> -L must list it; with a "
        "card, pcsc_scan must see reader and card.",
        ("AMQ9669E", "CTGSK2137W"),
        inside="So the program's slot lists ({n} C_GetSlotList) came back without a token, "
               "and a client reports a token it cannot find (IBM MQ: AMQ9669E; runmqakm: "
               "CTGSK2137W or CTGSK3026W)."),
    "token-label-not-found": Advice(
        "error", "No token labelled '{wanted}'{near}",
        "The client was looking for a token labelled '{wanted}', and the tokens the module "
        "reported (C_GetTokenInfo) are labelled {seen}. A client that cannot find its token "
        "says so in misleading words: IBM MQ AMQ9669E, runmqakm CTGSK2137W ('label does not "
        "exist') or even CTGSK3026W ('key file does not exist').",
        "Put the label exactly as the module reports it into the client's configuration "
        "(MQ: SSLCryptoHardware / the CCDT's GSK_PKCS11=<module>;<token label>;<PIN>;...; "
        "runmqakm: -tokenlabel): same case, same spaces; OpenSC names tokens of cards with "
        "several PINs 'UserPIN (<card label>)'.",
        ("AMQ9669E", "CTGSK2137W", "CTGSK3026W")),
    "tokens-without-session": Advice(
        "info", "Tokens listed, none opened: {seen}",
        "The program read the token list and never opened a session. That is all a listing "
        "tool does; a program that wanted to work with a token did not find the one it was "
        "configured for. Compare its configured label with these.",
        "If the program reported a missing token (AMQ9669E, CTGSK2137W, CTGSK3026W), run "
        "p11spy diagnose --token-label '<configured label>' on this trace.",
        ("AMQ9669E", "CTGSK2137W")),
    "object-not-found": Advice(
        "warning", "No object with {what}",
        "The program searched the token for an object with {what} ({n} search(es)) and the "
        "token returned none; no later search for it found anything. The object does not "
        "exist on this token, is private and the session was not logged in, or is on another "
        "token.",
        "List what the token holds: pkcs11-tool --module <module> --login -O; compare labels "
        "and IDs byte for byte (IDs are hex), and log in before searching for private keys.",
        ("CTGSK2137W",)),
    "mechanism-not-supported": Advice(
        "error", "{mechanism} not supported by the token",
        "{function} asked for {mechanism} and the token answered CKR_MECHANISM_INVALID. {listed}",
        "Use a mechanism the token supports (pkcs11-tool --module <module> -M lists them with "
        "what each may do), or do the hashing in software and sign with a plain mechanism "
        "(e.g. CKM_RSA_PKCS over a DigestInfo instead of CKM_SHA256_RSA_PKCS).",
        ("CKR_MECHANISM_INVALID",)),
    "key-usage": Advice(
        "error", "The key does not allow {operation}: {attribute} is {value}",
        "{function} was refused with CKR_KEY_FUNCTION_NOT_PERMITTED: the key's {attribute} "
        "attribute {state}. A key may only be used for what its usage attributes allow.",
        "Use a key made for this operation, or create the key with {attribute}=true (most "
        "tokens do not let it be changed afterwards).",
        ("CKR_KEY_FUNCTION_NOT_PERMITTED",)),
    "buffer-too-small-loop": Advice(
        "warning", "{function} returned CKR_BUFFER_TOO_SMALL {n} times in a row",
        "The module said the output buffer is too small and the program tried again {n} "
        "times{growth}. The PKCS#11 way is to call once with a NULL buffer to learn the "
        "length, then once with a buffer of that size; a program that retries without "
        "growing the buffer loops until it gives up.",
        "Fix the client to take the length the module returns (pulLen) and allocate that "
        "much before the second call.",
        ("CKR_BUFFER_TOO_SMALL",)),
    "client-stopped": Advice(
        "error", "The program gave up after {function} -> {rv} (#{seq})",
        "{function} returned {rv}{meaning}, and after it the program did no more work, only "
        "clean-up (closing sessions, C_Finalize): this is the failure it stopped on.{started}"
        "{causes}{earlier}",
        "Look at {checks}. p11spy decode shows #{seq} with its arguments, and p11spy explain "
        "{rv} what the code means.",
        ()),
    "call-never-returned": Advice(
        "error", "{what} never returned: the program crashed, was killed or hung inside it",
        "The trace ends inside {what}: it was called and did not come back before the trace "
        "stopped ({n} such call(s)). The program crashed, was killed (a signal, a timeout, "
        "the OOM killer) or hung in that call, or gave up waiting for it and exited: the call "
        "went wrong inside the module, the PC/SC layer, or a tracer loaded into the program.",
        "Look at how the program ended (its exit status, a core dump; p11spy run reports a "
        "death by signal), and run it again under a debugger (gdb --args ...) to see the stack "
        "inside that call; with OpenSC, OPENSC_DEBUG=9 shows how far the module got.",
        ()),
    "trace-incomplete": Advice(
        "info", "The trace is incomplete: {what}",
        "The reader found a gap ({first}): the file ends inside a record or a line, as when it "
        "is copied while still being written, or the tracer could not write (a full disk). "
        "What the trace does not show may still have happened, so diagnose draws no conclusion "
        "from its end or its gaps: no 'C_Finalize never called', no call that 'never returned' "
        "when the file was cut, no 'the program gave up' on the last failure it shows.",
        "Take the trace again, copying the file after the program ended, with room on the disk "
        "(P11SPY_OUTPUT on a file system that is not full).",
        ()),
    "setup-per-operation": Advice(
        "warning", "Setup per operation: {what} for each of {ops}",
        "The program made {ops} and, for them, called {counts}: it sets up {what} for every "
        "operation and tears it down again, instead of keeping them open.{share} A login is the "
        "expensive part of talking to a token (the PIN is checked, on a network HSM over a round "
        "trip of tens of milliseconds), and C_Initialize loads and starts the whole module.",
        "Initialise the library once per process, open a session per thread (or keep a pool) "
        "and log in once: a login counts for every session of the application on that token "
        "for as long as one of them stays open. Reuse them for each operation, as thread pools "
        "and TLS session caches do for connections.",
        ()),
    "threads-without-locking": Advice(
        "warning", "Calls from {threads} threads at once, but C_Initialize said no locking is "
        "needed",
        "C_Initialize (#{init}) was called with pInitArgs {how}: by PKCS#11 that tells the "
        "module the application will not call it from several threads at once, so the module "
        "need not protect its state. Then calls of {threads} threads overlapped in time "
        "({overlaps} times). Some modules cope; others corrupt their state or crash, now and "
        "then, under load.",
        "Call C_Initialize with a CK_C_INITIALIZE_ARGS whose flags include CKF_OS_LOCKING_OK "
        "(or that gives mutex callbacks), or serialise the calls into the module yourself.",
        ("CKR_CANT_LOCK",)),
    "where-time-went": Advice(
        "info", "Where the time went: {top}",
        "The slowest calls of the trace, with the card commands (APDUs) under them. {share}",
        "Slow calls with many APDUs are the card's work (reading certificates, probing "
        "drivers): enable caching (OpenSC: use_file_caching) or trim card_drivers. Slow calls "
        "without APDUs are the module's or the host's.",
        ()),
}
