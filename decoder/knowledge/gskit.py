"""IBM GSKit return codes (the distributed / IBM i set of gsk_* function results).

They reach users inside other messages: `SSL/TLS rc=408`, AMQ messages with ArithInsert1(414),
GSKit traces as `0x0000019e (414)`. Codes 429 and up for PKCS#11 exist in newer GSKit headers
but their numbers are not confirmed, so those are known by name only (value None).
"""

from __future__ import annotations

from p11spy.decoder.knowledge import Entry as _E

_KDB = ("the key repository path (MQ: SSLKEYR / MQSSLKEYR, without the .kdb) and that the "
        "service user can read the .kdb, .sth and .rdb files")
_STASH = ("the stash file (.sth) sits next to the .kdb and was written for the current "
          "password (runmqakm -keydb -stashpw)")
_LABEL = ("the certificate label: MQ uses CERTLABL, or ibmwebspheremq<qmgr name in lower "
          "case> / ibmwebspheremq<user> by default; list labels with runmqakm -cert -list")
_TOKEN = ("for a PKCS#11 token: the token label and PIN in GSK_PKCS11=<module>;<token "
          "label>;<PIN>;... exactly as the module reports them")
_CHAIN = "the whole chain of CA certificates is in the key repository of the side that checks"
_PEER_LOG = "the error log of the other side of the connection, for its view of the handshake"
_CIPHERS = "both sides allow a common TLS version and cipher suite (MQ: SSLCIPH on both ends)"
_API = "a program calling the GSKit API wrongly; nothing an administrator can set"
_I = "IBM i only."

GSKIT: tuple[_E, ...] = (
    _E("GSK_OK", 0, "The call worked."),
    _E("GSK_INVALID_HANDLE", 1, "The environment or connection handle is not valid (it did "
       "not come from a successful open).", (_API,)),
    _E("GSK_API_NOT_AVAILABLE", 2, "The GSKit library was unloaded; its API cannot be used.",
       ("Windows: the DLL was unloaded while still in use",)),
    _E("GSK_INTERNAL_ERROR", 3, "GSKit failed internally.", (),
       ("the GSKit version; a GSKit trace for IBM support",)),
    _E("GSK_INSUFFICIENT_STORAGE", 4, "GSKit could not get enough memory.", (),
       ("the process's memory limits",)),
    _E("GSK_INVALID_STATE", 5, "A call came in the wrong state of the handle (e.g. "
       "initializing twice).", (_API,)),
    _E("GSK_KEY_LABEL_NOT_FOUND", 6, "No certificate with the requested label is in the key "
       "repository or on the token.",
       ("a wrong label, or the certificate was stored on another token",),
       (_LABEL, _TOKEN)),
    _E("GSK_CERTIFICATE_NOT_AVAILABLE", 7, "The other side sent no certificate.",
       ("the peer has no certificate configured, or did not find its own",),
       (_PEER_LOG,)),
    _E("GSK_ERROR_CERT_VALIDATION", 8, "A certificate did not pass validation.",
       ("expired, not yet valid, or signed by a CA that is not trusted",), (_CHAIN,)),
    _E("GSK_ERROR_CRYPTO", 9, "A cryptographic operation failed.",
       ("for a key on a token: the token refused the signature or decryption",),
       ("a p11spy trace of the client for the CKR_* the module returned",)),
    _E("GSK_ERROR_ASN", 10, "A field of a certificate is not valid ASN.1.",
       ("a damaged or wrongly converted certificate",)),
    _E("GSK_ERROR_LDAP", 11, "The LDAP server (for revocation lists) could not be reached.",
       (), ("the LDAP server address and that it answers",)),
    _E("GSK_ERROR_UNKNOWN_ERROR", 12, "An unknown internal error.", (),
       ("a GSKit trace for IBM support",)),
    _E("GSK_OPEN_CIPHER_ERROR", 101, "An internal error while opening a cipher."),
    _E("GSK_KEYFILE_IO_ERROR", 102, "Reading the key repository failed.",
       ("a wrong path, missing permissions, or a damaged file",), (_KDB,)),
    _E("GSK_KEYFILE_INVALID_FORMAT", 103, "The key repository is damaged or not in the "
       "expected format.", ("a file of another type (e.g. JKS or PEM) named as a CMS .kdb",
                            "a damaged file"), (_KDB,)),
    _E("GSK_KEYFILE_DUPLICATE_KEY", 104, "Two entries in the key repository hold the same "
       "key.", (), ("list the repository and remove the duplicate",)),
    _E("GSK_KEYFILE_DUPLICATE_LABEL", 105, "Two entries in the key repository have the same "
       "label.", (), ("list the repository and rename or remove one",)),
    _E("GSK_BAD_FORMAT_OR_INVALID_PASSWORD", 106, "The key repository's password is wrong, or "
       "the file is damaged (GSKit cannot tell them apart: the password protects the file's "
       "integrity).", ("a wrong password or stale stash file",), (_STASH, _KDB)),
    _E("GSK_KEYFILE_CERT_EXPIRED", 107, "The certificate of the default key has expired.", (),
       ("the validity dates: runmqakm -cert -details",)),
    _E("GSK_ERROR_LOAD_GSKLIB", 108, "A GSKit library could not be loaded.",
       ("an incomplete or mixed GSKit installation, or a wrong library path",),
       ("the GSKit installation and LD_LIBRARY_PATH",)),
    _E("GSKit rc 109", 109, "A new connection was tried after the environment was closed "
       "with a delay.", (), (), None,
       "IBM's constant name for 109 is not confirmed; it may be GSK_PENDING_CLOSE_ERROR.",
       ("GSK_PENDING_CLOSE_ERROR",)),
    _E("GSK_NO_KEYFILE_PASSWORD", 201, "Neither a password nor a stash file was given for the "
       "key repository.", ("the stash file is missing or not found",), (_STASH,)),
    _E("GSK_KEYRING_OPEN_ERROR", 202, "The key repository could not be opened.",
       ("a wrong path or missing permissions",), (_KDB,)),
    _E("GSK_RSA_TEMP_KEY_PAIR", 203, "A temporary RSA key pair could not be generated."),
    _E("GSKit rc 204", 204, "The LDAP user name object was not found.", (), (), None,
       "IBM's constant name for 204 is not confirmed."),
    _E("GSKit rc 205", 205, "The password for the LDAP query is wrong.", (), (), None,
       "IBM's constant name for 205 is not confirmed."),
    _E("GSKit rc 206", 206, "An index into the list of LDAP fail-over servers is wrong.", (),
       (), None, "IBM's constant name for 206 is not confirmed."),
    _E("GSK_CLOSE_FAILED", 301, "Closing the environment or handle failed.", (), (), None,
       "An old (2001) IBM i copy of the header gives this name the number 203."),
    _E("GSK_ERROR_BAD_DATE", 401, "A certificate is outside its validity dates (expired or "
       "not yet valid).", ("an expired certificate", "a wrong system clock"),
       ("the validity dates of every certificate in the chain", "the clocks of both sides")),
    _E("GSK_ERROR_NO_CIPHERS", 402, "No cipher suite is enabled on both sides.",
       ("mismatched TLS settings", "a certificate whose key type fits none of the suites"),
       (_CIPHERS,)),
    _E("GSK_ERROR_NO_CERTIFICATE", 403, "No certificate was available or received where one "
       "is required.", ("the certificate label not found, or the peer sent none",),
       (_LABEL, _PEER_LOG)),
    _E("GSK_ERROR_BAD_CERTIFICATE", 404, "A certificate is malformed or was rejected.", (),
       (_CHAIN, _PEER_LOG)),
    _E("GSK_ERROR_UNSUPPORTED_CERTIFICATE_TYPE", 405, "This type of certificate is not "
       "supported.", ("a key type or size the other side does not accept",)),
    _E("GSK_ERROR_IO", 406, "A socket read or write failed during the TLS exchange.",
       ("the peer reset or closed the connection", "a firewall or proxy cut it"),
       (_PEER_LOG,)),
    _E("GSK_ERROR_BAD_KEYFILE_LABEL", 407, "The label of the certificate to use is not in the "
       "key repository (or on the token).",
       ("a wrong label", "MQ's default label expected but the certificate has another"),
       (_LABEL, _TOKEN), None, "", ("rrcE_SSL_BAD_KEYFILE_LABEL",)),
    _E("GSK_ERROR_BAD_KEYFILE_PASSWORD", 408, "The key repository's password is wrong, or the "
       "stash file cannot be used.",
       ("the repository was changed or recreated and the stash file is from before",
        "the key repository setting now points to another repository",
        "for a PKCS#11 token: a wrong token PIN in the GSK_PKCS11 string"),
       (_STASH, _KDB, _TOKEN)),
    _E("GSK_ERROR_BAD_KEY_LEN_FOR_EXPORT", 409, "The key length is not allowed under export "
       "rules."),
    _E("GSK_ERROR_BAD_MESSAGE", 410, "A malformed TLS message came from the other side.",
       ("the other side does not speak TLS on this port (plain text, or another protocol)",
        "a TLS version mismatch"), (_PEER_LOG, "that both ends of the channel use TLS")),
    _E("GSK_ERROR_BAD_MAC", 411, "A TLS record failed its integrity check.",
       ("data changed on the way (a faulty network device), or a peer bug",)),
    _E("GSK_ERROR_UNSUPPORTED", 412, "The protocol version or feature is not supported.", (),
       (_CIPHERS,)),
    _E("GSK_ERROR_BAD_CERT_SIG", 413, "A certificate's signature does not verify.",
       ("a damaged certificate, or the wrong CA certificate in the repository",), (_CHAIN,)),
    _E("GSK_ERROR_BAD_CERT", 414, "A certificate is not valid or its chain is not trusted.",
       ("the CA that signed the peer's certificate is not in the key repository",
        "an expired or revoked certificate"), (_CHAIN, _PEER_LOG)),
    _E("GSK_ERROR_BAD_PEER", 415, "The other side broke the TLS protocol.", (), (_PEER_LOG,)),
    _E("GSK_ERROR_PERMISSION_DENIED", 416, "The operating system refused access to something "
       "GSKit needs.",
       ("the service user cannot read a file GSKit needs",), (_KDB,)),
    _E("GSK_ERROR_SELF_SIGNED", 417, "A self-signed certificate is not trusted.",
       ("the peer's self-signed certificate was not added to this side's repository",),
       ("add the peer's certificate to the repository as a signer",)),
    _E("GSK_ERROR_NO_READ_FUNCTION", 418, "No read function was configured.", (_API,)),
    _E("GSK_ERROR_NO_WRITE_FUNCTION", 419, "No write function was configured.", (_API,)),
    _E("GSK_ERROR_SOCKET_CLOSED", 420, "The other side closed the connection.",
       ("the peer rejected the handshake (its log says why)",), (_PEER_LOG,)),
    _E("GSK_ERROR_BAD_V2_CIPHER", 421, "An SSLv2 cipher specification is not valid."),
    _E("GSK_ERROR_BAD_V3_CIPHER", 422, "An SSLv3/TLS cipher specification is not valid.",
       ("a cipher suite name or number GSKit does not know",), (_CIPHERS,)),
    _E("GSK_ERROR_BAD_SEC_TYPE", 423, "The security protocol type is not valid."),
    _E("GSK_ERROR_BAD_SEC_TYPE_COMBINATION", 424, "The combination of protocol types is not "
       "valid."),
    _E("GSK_ERROR_HANDLE_CREATION_FAILED", 425, "A connection handle could not be created."),
    _E("GSK_ERROR_INITIALIZATION_FAILED", 426, "Initializing the environment or connection "
       "failed.", ("often the key repository or the token could not be opened",),
       (_KDB, _TOKEN)),
    _E("GSK_ERROR_LDAP_NOT_AVAILABLE", 427, "The LDAP server for revocation lists is not "
       "available.", (), ("the LDAP server address and that it answers",)),
    _E("GSK_ERROR_NO_PRIVATE_KEY", 428, "The certificate has no usable private key.",
       ("only the certificate was imported, without its key",
        "for a token: the key is not on the token, not found, or cannot be used (e.g. no "
        "login)"),
       ("the entry has its key: runmqakm -cert -list personal lists only entries with keys",
        _TOKEN, "a p11spy trace of the client: the key search and C_Login results")),
    _E("GSK_INVALID_BUFFER_SIZE", 501, "The buffer size for a read or write is not valid.",
       (_API,)),
    _E("GSK_WOULD_BLOCK", 502, "A non-blocking socket would have to wait.",
       ("normal for non-blocking programs: they retry",)),
    _E("GSK_ERROR_NOT_SSLV3", 601, "The operation needs an SSLv3 or TLS connection."),
    _E("GSK_MISC_INVALID_ID", 602, "The identifier passed to gsk_secure_soc_misc is not "
       "valid.", (_API,)),
    _E("GSK_ATTRIBUTE_INVALID_ID", 701, "The attribute identifier is not known.",
       ("a setting this GSKit version does not know",)),
    _E("GSK_ATTRIBUTE_INVALID_LENGTH", 702, "The length of the attribute's value is not "
       "valid."),
    _E("GSK_ATTRIBUTE_INVALID_ENUMERATION", 703, "The attribute's value is not one of those "
       "allowed."),
    _E("GSK_ATTRIBUTE_INVALID_SID_CACHE", 704, "The session-id cache setting is not valid."),
    _E("GSK_ATTRIBUTE_INVALID_NUMERIC_VALUE", 705, "A numeric attribute is out of range."),
    _E("GSK_SC_OK", 1501, "The certificate-prompt callback answered OK."),
    _E("GSK_SC_CANCEL", 1502, "The certificate-prompt callback was cancelled."),
    # --- IBM i (AS/400) ---------------------------------------------------------------
    _E("GSK_AS400_ERROR_NOT_TRUSTED_ROOT", 6000, "The root CA of the certificate is not "
       "trusted.", (), (_CHAIN,), None, _I),
    _E("GSK_AS400_ERROR_PASSWORD_EXPIRED", 6001, "The password has expired.", (), (), None, _I),
    _E("GSK_AS400_ERROR_NOT_REGISTERED", 6002, "The application is not registered.", (), (),
       None, _I),
    _E("GSK_AS400_ERROR_NO_ACCESS", 6003, "No access.", (), (), None, _I),
    _E("GSK_AS400_ERROR_CLOSED", 6004, "Already closed.", (), (), None, _I),
    _E("GSK_AS400_ERROR_NO_CERTIFICATE_AUTHORITIES", 6005, "No certificate authorities are "
       "set up.", (), (), None, _I),
    _E("GSK_AS400_ERROR_NO_INITIALIZE", 6007, "Not initialized.", (), (), None, _I),
    _E("GSK_AS400_ERROR_ALREADY_SECURE", 6008, "The connection is already secured.", (), (),
       None, _I),
    _E("GSK_AS400_ERROR_NOT_TCP", 6009, "The socket is not a TCP socket.", (), (), None, _I),
    _E("GSK_AS400_ERROR_INVALID_POINTER", 6010, "A pointer is not valid.", (), (), None, _I),
    _E("GSK_AS400_ERROR_TIMED_OUT", 6011, "The operation timed out.", (), (), None, _I),
    _E("GSK_AS400_ERROR_ASYNCHRONOUS_RECV", 6012, "An asynchronous receive is already "
       "pending.", (), (), None, _I),
    _E("GSK_AS400_ERROR_ASYNCHRONOUS_SEND", 6013, "An asynchronous send is already pending.",
       (), (), None, _I),
    _E("GSK_AS400_ERROR_INVALID_OVERLAPPEDIO_T", 6014, "The overlapped I/O structure is not "
       "valid.", (), (), None, _I),
    _E("GSK_AS400_ERROR_INVALID_IOCOMPLETIONPORT", 6015, "The I/O completion port is not "
       "valid.", (), (), None, _I),
    _E("GSK_AS400_ERROR_BAD_SOCKET_DESCRIPTOR", 6016, "The socket descriptor is not valid.",
       (), (), None, _I),
)

_UNCONFIRMED = ("Known by name from newer GSKit headers; believed to be one of 429-433, but "
                "the number is not confirmed.")

# PKCS#11 codes of newer GSKit versions: by name only, their numbers are not confirmed.
GSKIT_BY_NAME_ONLY: tuple[_E, ...] = (
    _E("GSK_ERROR_PKCS11_LIBRARY_NOTLOADED", None, "GSKit could not load the PKCS#11 module.",
       ("a wrong module path in GSK_PKCS11=...", "a 32/64-bit mismatch or missing "
                                                  "dependency of the module"),
       ("the path exists and ldd <module> shows nothing 'not found'",), None, _UNCONFIRMED),
    _E("GSK_ERROR_PKCS11_TOKEN_LABELMISMATCH", None, "No token with the configured label was "
       "found.", ("the token label differs from what the module reports (spaces, case)",),
       (_TOKEN, "the labels the module reports: pkcs11-tool -L"), None, _UNCONFIRMED),
    _E("GSK_ERROR_PKCS11_TOKEN_NOTPRESENT", None, "The PKCS#11 token is not present.",
       ("card not inserted, token unplugged, or the reader service down",),
       ("pkcs11-tool -L shows the token",), None, _UNCONFIRMED),
    _E("GSK_ERROR_PKCS11_TOKEN_BADPASSWORD", None, "The token refused the PIN.",
       ("a wrong PIN in GSK_PKCS11=...",),
       ("the PIN; a p11spy trace shows C_Login's result and the PIN's length",),
       None, _UNCONFIRMED),
    _E("GSK_ERROR_INVALID_V2_HEADER", None, "An SSLv2-format header was not valid.", (), (),
       None, _UNCONFIRMED),
)

# Numbers reserved as a block, explained by range: (name of the base, first, last, meaning).
GSKIT_RANGES: tuple[tuple[str, int, int, str], ...] = (
    ("GSK_OS390_BASE", 7000, 7999, "A code of the range reserved for z/OS System SSL; "
     "see the z/OS documentation."),
)
