"""IBM messages around a key store or PKCS#11 token: runmqakm / GSKCapiCmd (CTGSK*), IBM MQ
(AMQ*) and MQ reason codes (MQRC_*).

A lesson from the field: these messages often name the wrong thing. A "key file" or "label"
error from runmqakm with -crypto is frequently a wrong token label or PIN, so the checks below
say so. CTGSK and AMQ entries are message ids (value None); MQ reason codes are numbers.
"""

from __future__ import annotations

from p11spy.decoder.knowledge import Entry as _E

_TOKEN = ("the token label exactly as the module reports it (e.g. 'UserPIN (mytoken)'; list "
          "with runmqakm -keydb -list -crypto <module> or pkcs11-tool -L), and the PIN")
_MODULE = "the PKCS#11 module path exists and loads (ldd <module>)"
_CRYPTO = "GSK_PKCS11=<module>;<token label>;<PIN>;... in SSLCryptoHardware / SSLCRYP"
_ERRLOG = ("the MQ error logs (AMQERR01.LOG of the queue manager, or of the client) for the "
           "AMQ messages around it and their GSKit return code")
_KEYR = ("the key repository setting (SSLKEYR / MQSSLKEYR, given without .kdb) and that the "
         "mqm or client user can read the .kdb, .sth and .rdb files")
_STASH = "the stash file (.sth) matches the repository's password (runmqakm -keydb -stashpw)"
_CIPH = "SSLCIPH is the same CipherSpec on both ends of the channel"
_CHAIN = "each side's repository holds the CA certificates that signed the other's certificate"
_TRACE = "a p11spy trace of the failing process, for what the module actually answered"
_UNVERIFIED = "Message text recalled, not confirmed in IBM's documentation."

CTGSK: tuple[_E, ...] = (
    _E("CTGSK3046W", None, "runmqakm / GSKCapiCmd could not import the key file.",
       ("the input is not a certificate or PKCS#12 file of the type given",
        "a wrong password for the PKCS#12 file"),
       ("the file's format and password: openssl pkcs12 -info -in <file>",
        "the -type / -format options of the command"),
       note="Seen with the tool's exit status 26."),
    _E("CTGSK3056W", None, "runmqakm / GSKCapiCmd rejected a PKCS#12 file made with OpenSSL "
       "as being in the wrong format.",
       ("the PKCS#12 file uses protection algorithms this GSKit version cannot read",),
       ("export it again with older algorithms (OpenSSL 3: openssl pkcs12 -export -legacy)",
        "the GSKit version"),
       note="Exact message text not confirmed."),
    _E("CTGSK3026W", None, "runmqakm / GSKCapiCmd says the key file does not exist or cannot "
       "be read.",
       ("without -crypto: a wrong path, missing permissions, or the wrong -type",
        "with -crypto (a PKCS#11 token): misleading, usually a wrong -tokenlabel or -pw"),
       ("the path and the file's permissions", _TOKEN)),
    _E("CTGSK2137W", None, "runmqakm / GSKCapiCmd says the label does not exist on the "
       "PKCS#11 device.",
       ("a wrong -tokenlabel or -pw, more often than a missing certificate label",),
       (_TOKEN, "the certificate labels on the token: runmqakm -cert -list all -crypto "
                "<module> -tokenlabel <label> -pw <PIN>")),
    _E("CTGSK3034W", None, "runmqakm / GSKCapiCmd says the certificate request for the "
       "certificate being received is not in the key database.",
       ("receiving a signed certificate into a token with -cert -receive -crypto",
        "the request was made elsewhere, or with another key"),
       ("workaround: convert it to DER (openssl x509 -inform pem -outform der) and store it "
        "with pkcs11-tool --write-object <file> --type cert --label <key label> --login",)),
)

AMQ: tuple[_E, ...] = (
    _E("AMQ9005E", None, "MQ Advanced Message Security could not open the PKCS#11 token.",
       ("a wrong module path, token label or PIN in the AMS configuration",),
       ("the GSKit ACME GSS minor reason in the message, in IBM's table for AMS messages",
        _TOKEN, _TRACE)),
    _E("AMQ9006E", None, "MQ Advanced Message Security did not try to open a PKCS#11 token "
       "because its label, PIN or module is not configured.", (),
       ("the PKCS#11 settings (module, token label, PIN) of the AMS configuration",)),
    _E("AMQ9007E", None, "MQ Advanced Message Security could not convert the label of a "
       "PKCS#11 key certificate.", (), ("the certificate label in the AMS configuration",)),
    _E("AMQ9631E", None, "The CipherSpec agreed in the TLS handshake is not the one the "
       "channel requires.", ("the two ends of the channel name different CipherSpecs",),
       (_CIPH,), note=_UNVERIFIED),
    _E("AMQ9633E", None, "A TLS certificate on the channel is bad: malformed, not trusted, "
       "revoked, or its revocation list could not be fetched.",
       ("a missing CA certificate", "an expired or revoked certificate"),
       ("ArithInsert1 of the message: the GSKit return code (e.g. 414)", _CHAIN)),
    _E("AMQ9635E", None, "The channel does not name a valid CipherSpec.",
       ("a misspelt or unsupported SSLCIPH value",), (_CIPH,)),
    _E("AMQ9638E", None, "A TLS communication error on the channel; the messages before it "
       "say more.", (), (_ERRLOG,), note="The channel name may show as ????."),
    _E("AMQ9642E", None, "The local key repository has no certificate to present, but the "
       "other side requires one.",
       ("no certificate under the expected label (CERTLABL or the default label)",
        "for a token: the certificate is not on the token, or the token was not opened"),
       (_KEYR, _TOKEN)),
    _E("AMQ9660E", None, "The key repository's password is wrong, or its stash file is "
       "missing or unusable.", ("a repository recreated or replaced without a new stash file",),
       (_STASH, _KEYR)),
    _E("AMQ9669E", None, "The PKCS#11 token could not be found: no token carries the label "
       "given in the key repository string.",
       ("the token label differs from what the module reports",
        "a wrong module path, so the module finds no token",
        "card not inserted or reader service down"),
       (_CRYPTO, _TOKEN, _MODULE, _TRACE), note=_UNVERIFIED),
    _E("AMQ9716E", None, "Checking the revocation status of the remote TLS certificate "
       "failed.", ("the OCSP responder or CRL server could not be reached or gave no answer",),
       ("the revocation settings (OCSP, CRL, AUTHINFO) and network access to those servers",)),
    _E("AMQ3230E", None, "Seen together with rrcE_SSL_BAD_KEYFILE_LABEL (407): the "
       "certificate label was not found (GSKit 407).", ("a wrong certificate label",),
       (_KEYR, "the label (CERTLABL) against runmqakm -cert -list"),
       note="The message's own text is not confirmed."),
    _E("AMQ4199", None, "MQ Explorer: the queue manager is not available for a client "
       "connection because of a TLS configuration error.", (),
       ("the client's key repository and CipherSpec; " + _ERRLOG,)),
    _E("AMQ5530E", None, "The LDAP authentication/authorization service reported an error "
       "(not a TLS/PKCS#11 message as such).",
       ("with LDAP over TLS: the key repository, e.g. GSKit rc=408 (its password or stash "
        "does not match after the repository was changed)",
        "'Invalid credentials' (LDAP error 49): an anonymous bind to a server that forbids "
        "it"),
       ("the LDAP error and any SSL/TLS rc in the message",
        "LDAPUSER and LDAPPWD on the AUTHINFO object", _STASH)),
    _E("AMQ5532E", None, "Authorizing an entity in LDAP failed (LDAP, not TLS).",
       ("a group looked up with an object class or attribute that does not match the "
        "directory (e.g. after NESTGRP(YES))",),
       ("CLASSGRP, GRPFIELD and the group entries in the directory",)),
    _E("AMQ7026E", None, "A principal or group name was not valid.",
       ("with LDAP: GRPFIELD changed, so the group search no longer matches the entry",),
       ("the AUTHINFO's GRPFIELD against the directory's group entries",)),
)

MQRC: tuple[_E, ...] = (
    _E("MQRC_HOBJ_ERROR", 2019, "The object handle is not valid.",
       ("with MQSUB: the queue handle does not fit the subscription (managed subscription "
        "vs a named queue)",), ("the program's MQSUB options and handles",)),
    _E("MQRC_KEY_REPOSITORY_ERROR", 2381, "The TLS key repository could not be used.",
       ("a wrong path, missing files or permissions", "a stash file that does not match"),
       (_KEYR, _STASH, _ERRLOG)),
    _E("MQRC_SSL_INITIALIZATION_ERROR", 2393, "TLS could not be initialized for the "
       "connection.",
       ("the key repository or the PKCS#11 token could not be opened (label, PIN, module)",
        "a wrong CipherSpec or certificate label"),
       (_ERRLOG, _CRYPTO, _TRACE)),
    _E("MQRC_UNSUPPORTED_CIPHER_SUITE", 2400, "The CipherSpec is not supported.",
       ("a CipherSpec unknown to this MQ/GSKit level, or disabled by policy",), (_CIPH,)),
    _E("MQRC_SUB_NAME_ERROR", 2440, "The subscription name is not valid.",
       ("the name's data is in another code page than declared (EBCDIC data declared as "
        "ASCII 437)",), ("the CCSID given with the subscription name",)),
    _E("MQRC_HMSG_ERROR", 2460, "The message handle is not valid.",
       ("an MQGET with an MQGMO older than version 4, or an MQPUT with an MQPMO older than "
        "version 3, while using message handles",), ("the Version field of MQGMO / MQPMO",)),
    _E("MQRC_IMPO_ERROR", 2464, "The inquire-message-property options (MQIMPO) are not "
       "valid.",
       ("z/OS: a C program built in ASCII mode, so the structure's eye-catcher is ASCII "
        "where EBCDIC is required",), ("the compiler's character set options",)),
    _E("MQRC_PD_ERROR", 2482, "The property descriptor (MQPD) is not valid.",
       ("z/OS: a C program built in ASCII mode (ASCII eye-catcher instead of EBCDIC)",),
       ("the compiler's character set options",)),
)
