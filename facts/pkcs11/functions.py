"""The PKCS#11 function table: every entry of CK_FUNCTION_LIST_3_2, in list order.

The shim's C wrappers are generated from this table and the decoder reads records with it, so
a function's name, its parameters (spec names, C types, order) and its place in the list are
written here once. Roles say how each parameter is captured and rendered (see model.Role).

Sources: the OASIS PKCS#11 3.2 headers and specification text (parameter names and the list
order, which is normative), cross-checked against the public-domain headers of
latchset/pkcs11-headers (2.40, 3.0, 3.2-prerelease). Where they disagree the OASIS text wins:

* The 3.2-prerelease public-domain header stops CK_FUNCTION_LIST_3_2 at C_AsyncJoin; the
  published 3.2 list ends with C_WrapKeyAuthenticated and C_UnwrapKeyAuthenticated, so a 3.2
  list has 68 + 24 + 12 = 104 entries.
* That header's CK_C_EncapsulateKey / CK_C_DecapsulateKey typedefs order the arguments
  differently from its own prototypes; the OASIS order (template, then ciphertext, then the
  new key's handle) is used.
* OASIS pkcs11f.h spells C_WaitForSlotEvent's last parameter "pRserved"; the specification
  text says "pReserved", which is used here.
"""

from __future__ import annotations

import dataclasses

from .model import Function, Param, Role

VERSIONS = ("2.40", "3.0", "3.2")

# Template parameters that describe a secret or private key the call creates carry
# kind="key": the shim then treats secret-if-key attributes in them as key material even
# when the template itself does not say CKA_CLASS. Other templates are judged by content.
KEY_TEMPLATE = "key"


# Short constructors, so that each function below reads like its C prototype.


def _session() -> Param:
    return Param("hSession", "CK_SESSION_HANDLE", Role.HANDLE, kind="session")


def _slot() -> Param:
    return Param("slotID", "CK_SLOT_ID", Role.HANDLE, kind="slot")


def _obj(name: str) -> Param:
    return Param(name, "CK_OBJECT_HANDLE", Role.HANDLE, kind="object")


def _obj_out(name: str) -> Param:
    return Param(name, "CK_OBJECT_HANDLE_PTR", Role.HANDLE_OUT, kind="object")


def _mech() -> Param:
    return Param("pMechanism", "CK_MECHANISM_PTR", Role.MECHANISM)


def _len(name: str) -> Param:
    return Param(name, "CK_ULONG", Role.LENGTH)


def _len_ptr(name: str) -> Param:
    return Param(name, "CK_ULONG_PTR", Role.LENGTH_PTR)


def _bytes_in(name: str, length: str, ctype: str = "CK_BYTE_PTR") -> Param:
    return Param(name, ctype, Role.BYTES_IN, length=length)


def _bytes_out(name: str, length: str) -> Param:
    return Param(name, "CK_BYTE_PTR", Role.BYTES_OUT, length=length)


def _pin(name: str, length: str) -> Param:
    return Param(name, "CK_UTF8CHAR_PTR", Role.PIN, length=length)


def _template(name: str, count: str, kind: str | None = None) -> Param:
    return Param(name, "CK_ATTRIBUTE_PTR", Role.TEMPLATE_IN, length=count, kind=kind)


def _struct_out(name: str, ctype: str, struct: str) -> Param:
    return Param(name, ctype, Role.STRUCT_OUT, struct=struct)


def _message_param() -> tuple[Param, Param]:
    return (Param("pParameter", "CK_VOID_PTR", Role.BYTES_INOUT, length="ulParameterLen"),
            _len("ulParameterLen"))


def _fn(name: str, since: str, *params: Param) -> Function:
    return Function(name, tuple(params), since)


def _init(name: str, since: str) -> Function:
    """The xxxInit shape shared by the operation-starting functions."""
    return _fn(name, since, _session(), _mech(), _obj("hKey"))


def _session_only(name: str, since: str) -> Function:
    return _fn(name, since, _session())


def _in_out(name: str, since: str, pin: str, pout: str) -> Function:
    """The one-part / update shape: an input buffer in, an output buffer out (two calls)."""
    return _fn(name, since, _session(),
               _bytes_in(pin, f"ul{pin[1:]}Len"), _len(f"ul{pin[1:]}Len"),
               _bytes_out(pout, f"pul{pout[1:]}Len"), _len_ptr(f"pul{pout[1:]}Len"))


def _feed(name: str, since: str, pin: str) -> Function:
    """An update that only feeds data: (hSession, pX, ulXLen)."""
    return _fn(name, since, _session(), _bytes_in(pin, f"ul{pin[1:]}Len"),
               _len(f"ul{pin[1:]}Len"))


def _final(name: str, since: str, pout: str) -> Function:
    """A final that only produces data: (hSession, pX, pulXLen)."""
    return _fn(name, since, _session(), _bytes_out(pout, f"pul{pout[1:]}Len"),
               _len_ptr(f"pul{pout[1:]}Len"))


_TABLE: list[Function] = [
    # --- CK_FUNCTION_LIST (2.40): 68 entries -------------------------------------------------
    _fn("C_Initialize", "2.40", Param("pInitArgs", "CK_VOID_PTR", Role.INIT_ARGS)),
    _fn("C_Finalize", "2.40", Param("pReserved", "CK_VOID_PTR", Role.POINTER)),
    _fn("C_GetInfo", "2.40", _struct_out("pInfo", "CK_INFO_PTR", "CK_INFO")),
    _fn("C_GetFunctionList", "2.40",
        Param("ppFunctionList", "CK_FUNCTION_LIST_PTR_PTR", Role.FUNCTION_LIST_OUT)),
    _fn("C_GetSlotList", "2.40",
        Param("tokenPresent", "CK_BBOOL", Role.BOOL),
        Param("pSlotList", "CK_SLOT_ID_PTR", Role.ARRAY_OUT, length="pulCount", kind="slot"),
        _len_ptr("pulCount")),
    _fn("C_GetSlotInfo", "2.40", _slot(),
        _struct_out("pInfo", "CK_SLOT_INFO_PTR", "CK_SLOT_INFO")),
    _fn("C_GetTokenInfo", "2.40", _slot(),
        _struct_out("pInfo", "CK_TOKEN_INFO_PTR", "CK_TOKEN_INFO")),
    _fn("C_GetMechanismList", "2.40", _slot(),
        Param("pMechanismList", "CK_MECHANISM_TYPE_PTR", Role.ARRAY_OUT, length="pulCount",
              kind="CKM"),
        _len_ptr("pulCount")),
    _fn("C_GetMechanismInfo", "2.40", _slot(),
        Param("type", "CK_MECHANISM_TYPE", Role.ENUM, kind="CKM"),
        _struct_out("pInfo", "CK_MECHANISM_INFO_PTR", "CK_MECHANISM_INFO")),
    _fn("C_InitToken", "2.40", _slot(),
        _pin("pPin", "ulPinLen"), _len("ulPinLen"),
        Param("pLabel", "CK_UTF8CHAR_PTR", Role.TEXT_FIXED, size=32)),
    _fn("C_InitPIN", "2.40", _session(), _pin("pPin", "ulPinLen"), _len("ulPinLen")),
    _fn("C_SetPIN", "2.40", _session(),
        _pin("pOldPin", "ulOldLen"), _len("ulOldLen"),
        _pin("pNewPin", "ulNewLen"), _len("ulNewLen")),
    _fn("C_OpenSession", "2.40", _slot(),
        Param("flags", "CK_FLAGS", Role.FLAGS, kind="CKF_SESSION"),
        Param("pApplication", "CK_VOID_PTR", Role.POINTER),
        Param("Notify", "CK_NOTIFY", Role.POINTER),
        Param("phSession", "CK_SESSION_HANDLE_PTR", Role.HANDLE_OUT, kind="session")),
    _session_only("C_CloseSession", "2.40"),
    _fn("C_CloseAllSessions", "2.40", _slot()),
    _fn("C_GetSessionInfo", "2.40", _session(),
        _struct_out("pInfo", "CK_SESSION_INFO_PTR", "CK_SESSION_INFO")),
    _final("C_GetOperationState", "2.40", "pOperationState"),
    _fn("C_SetOperationState", "2.40", _session(),
        _bytes_in("pOperationState", "ulOperationStateLen"), _len("ulOperationStateLen"),
        _obj("hEncryptionKey"), _obj("hAuthenticationKey")),
    _fn("C_Login", "2.40", _session(),
        Param("userType", "CK_USER_TYPE", Role.ENUM, kind="CKU"),
        _pin("pPin", "ulPinLen"), _len("ulPinLen")),
    _session_only("C_Logout", "2.40"),
    _fn("C_CreateObject", "2.40", _session(),
        _template("pTemplate", "ulCount"), _len("ulCount"), _obj_out("phObject")),
    _fn("C_CopyObject", "2.40", _session(), _obj("hObject"),
        _template("pTemplate", "ulCount"), _len("ulCount"), _obj_out("phNewObject")),
    _fn("C_DestroyObject", "2.40", _session(), _obj("hObject")),
    _fn("C_GetObjectSize", "2.40", _session(), _obj("hObject"),
        Param("pulSize", "CK_ULONG_PTR", Role.ULONG_OUT)),
    _fn("C_GetAttributeValue", "2.40", _session(), _obj("hObject"),
        Param("pTemplate", "CK_ATTRIBUTE_PTR", Role.TEMPLATE_INOUT, length="ulCount"),
        _len("ulCount")),
    _fn("C_SetAttributeValue", "2.40", _session(), _obj("hObject"),
        _template("pTemplate", "ulCount"), _len("ulCount")),
    _fn("C_FindObjectsInit", "2.40", _session(),
        _template("pTemplate", "ulCount"), _len("ulCount")),
    # pulObjectCount only reports how many handles were written; it is still the LENGTH_PTR
    # of phObject, whose room is the separate ulMaxObjectCount.
    _fn("C_FindObjects", "2.40", _session(),
        Param("phObject", "CK_OBJECT_HANDLE_PTR", Role.ARRAY_OUT, length="pulObjectCount",
              capacity="ulMaxObjectCount", kind="object"),
        _len("ulMaxObjectCount"), _len_ptr("pulObjectCount")),
    _session_only("C_FindObjectsFinal", "2.40"),
    _init("C_EncryptInit", "2.40"),
    _in_out("C_Encrypt", "2.40", "pData", "pEncryptedData"),
    _in_out("C_EncryptUpdate", "2.40", "pPart", "pEncryptedPart"),
    _final("C_EncryptFinal", "2.40", "pLastEncryptedPart"),
    _init("C_DecryptInit", "2.40"),
    _in_out("C_Decrypt", "2.40", "pEncryptedData", "pData"),
    _in_out("C_DecryptUpdate", "2.40", "pEncryptedPart", "pPart"),
    _final("C_DecryptFinal", "2.40", "pLastPart"),
    _fn("C_DigestInit", "2.40", _session(), _mech()),
    _in_out("C_Digest", "2.40", "pData", "pDigest"),
    _feed("C_DigestUpdate", "2.40", "pPart"),
    _fn("C_DigestKey", "2.40", _session(), _obj("hKey")),
    _final("C_DigestFinal", "2.40", "pDigest"),
    _init("C_SignInit", "2.40"),
    _in_out("C_Sign", "2.40", "pData", "pSignature"),
    _feed("C_SignUpdate", "2.40", "pPart"),
    _final("C_SignFinal", "2.40", "pSignature"),
    _init("C_SignRecoverInit", "2.40"),
    _in_out("C_SignRecover", "2.40", "pData", "pSignature"),
    _init("C_VerifyInit", "2.40"),
    _fn("C_Verify", "2.40", _session(),
        _bytes_in("pData", "ulDataLen"), _len("ulDataLen"),
        _bytes_in("pSignature", "ulSignatureLen"), _len("ulSignatureLen")),
    _feed("C_VerifyUpdate", "2.40", "pPart"),
    _feed("C_VerifyFinal", "2.40", "pSignature"),
    _init("C_VerifyRecoverInit", "2.40"),
    _in_out("C_VerifyRecover", "2.40", "pSignature", "pData"),
    _in_out("C_DigestEncryptUpdate", "2.40", "pPart", "pEncryptedPart"),
    _in_out("C_DecryptDigestUpdate", "2.40", "pEncryptedPart", "pPart"),
    _in_out("C_SignEncryptUpdate", "2.40", "pPart", "pEncryptedPart"),
    _in_out("C_DecryptVerifyUpdate", "2.40", "pEncryptedPart", "pPart"),
    _fn("C_GenerateKey", "2.40", _session(), _mech(),
        _template("pTemplate", "ulCount", KEY_TEMPLATE), _len("ulCount"), _obj_out("phKey")),
    # The public key's template is judged by its content; the private key's is key material.
    _fn("C_GenerateKeyPair", "2.40", _session(), _mech(),
        _template("pPublicKeyTemplate", "ulPublicKeyAttributeCount"),
        _len("ulPublicKeyAttributeCount"),
        _template("pPrivateKeyTemplate", "ulPrivateKeyAttributeCount", KEY_TEMPLATE),
        _len("ulPrivateKeyAttributeCount"),
        _obj_out("phPublicKey"), _obj_out("phPrivateKey")),
    _fn("C_WrapKey", "2.40", _session(), _mech(), _obj("hWrappingKey"), _obj("hKey"),
        _bytes_out("pWrappedKey", "pulWrappedKeyLen"), _len_ptr("pulWrappedKeyLen")),
    _fn("C_UnwrapKey", "2.40", _session(), _mech(), _obj("hUnwrappingKey"),
        _bytes_in("pWrappedKey", "ulWrappedKeyLen"), _len("ulWrappedKeyLen"),
        _template("pTemplate", "ulAttributeCount", KEY_TEMPLATE), _len("ulAttributeCount"),
        _obj_out("phKey")),
    _fn("C_DeriveKey", "2.40", _session(), _mech(), _obj("hBaseKey"),
        _template("pTemplate", "ulAttributeCount", KEY_TEMPLATE), _len("ulAttributeCount"),
        _obj_out("phKey")),
    _feed("C_SeedRandom", "2.40", "pSeed"),
    _fn("C_GenerateRandom", "2.40", _session(),
        Param("RandomData", "CK_BYTE_PTR", Role.BYTES_OUT_FIXED, length="ulRandomLen"),
        _len("ulRandomLen")),
    _session_only("C_GetFunctionStatus", "2.40"),
    _session_only("C_CancelFunction", "2.40"),
    _fn("C_WaitForSlotEvent", "2.40",
        Param("flags", "CK_FLAGS", Role.FLAGS, kind="CKF_WAIT"),
        Param("pSlot", "CK_SLOT_ID_PTR", Role.HANDLE_OUT, kind="slot"),
        Param("pReserved", "CK_VOID_PTR", Role.POINTER)),
    # --- CK_FUNCTION_LIST_3_0 additions: 24 entries ------------------------------------------
    _fn("C_GetInterfaceList", "3.0",
        Param("pInterfacesList", "CK_INTERFACE_PTR", Role.INTERFACE_LIST_OUT,
              length="pulCount"),
        _len_ptr("pulCount")),
    _fn("C_GetInterface", "3.0",
        Param("pInterfaceName", "CK_UTF8CHAR_PTR", Role.CSTRING),
        Param("pVersion", "CK_VERSION_PTR", Role.STRUCT_IN, struct="CK_VERSION"),
        Param("ppInterface", "CK_INTERFACE_PTR_PTR", Role.INTERFACE_OUT),
        Param("flags", "CK_FLAGS", Role.FLAGS, kind="CKF_INTERFACE")),
    _fn("C_LoginUser", "3.0", _session(),
        Param("userType", "CK_USER_TYPE", Role.ENUM, kind="CKU"),
        _pin("pPin", "ulPinLen"), _len("ulPinLen"),
        _bytes_in("pUsername", "ulUsernameLen", "CK_UTF8CHAR_PTR"), _len("ulUsernameLen")),
    _fn("C_SessionCancel", "3.0", _session(),
        Param("flags", "CK_FLAGS", Role.FLAGS, kind="CKF_MECHANISM")),
    _init("C_MessageEncryptInit", "3.0"),
    _fn("C_EncryptMessage", "3.0", _session(), *_message_param(),
        _bytes_in("pAssociatedData", "ulAssociatedDataLen"), _len("ulAssociatedDataLen"),
        _bytes_in("pPlaintext", "ulPlaintextLen"), _len("ulPlaintextLen"),
        _bytes_out("pCiphertext", "pulCiphertextLen"), _len_ptr("pulCiphertextLen")),
    _fn("C_EncryptMessageBegin", "3.0", _session(), *_message_param(),
        _bytes_in("pAssociatedData", "ulAssociatedDataLen"), _len("ulAssociatedDataLen")),
    _fn("C_EncryptMessageNext", "3.0", _session(), *_message_param(),
        _bytes_in("pPlaintextPart", "ulPlaintextPartLen"), _len("ulPlaintextPartLen"),
        _bytes_out("pCiphertextPart", "pulCiphertextPartLen"),
        _len_ptr("pulCiphertextPartLen"),
        Param("flags", "CK_FLAGS", Role.FLAGS, kind="CKF_MESSAGE")),
    _session_only("C_MessageEncryptFinal", "3.0"),
    _init("C_MessageDecryptInit", "3.0"),
    _fn("C_DecryptMessage", "3.0", _session(), *_message_param(),
        _bytes_in("pAssociatedData", "ulAssociatedDataLen"), _len("ulAssociatedDataLen"),
        _bytes_in("pCiphertext", "ulCiphertextLen"), _len("ulCiphertextLen"),
        _bytes_out("pPlaintext", "pulPlaintextLen"), _len_ptr("pulPlaintextLen")),
    _fn("C_DecryptMessageBegin", "3.0", _session(), *_message_param(),
        _bytes_in("pAssociatedData", "ulAssociatedDataLen"), _len("ulAssociatedDataLen")),
    _fn("C_DecryptMessageNext", "3.0", _session(), *_message_param(),
        _bytes_in("pCiphertextPart", "ulCiphertextPartLen"), _len("ulCiphertextPartLen"),
        _bytes_out("pPlaintextPart", "pulPlaintextPartLen"), _len_ptr("pulPlaintextPartLen"),
        Param("flags", "CK_FLAGS", Role.FLAGS, kind="CKF_MESSAGE")),
    _session_only("C_MessageDecryptFinal", "3.0"),
    _init("C_MessageSignInit", "3.0"),
    _fn("C_SignMessage", "3.0", _session(), *_message_param(),
        _bytes_in("pData", "ulDataLen"), _len("ulDataLen"),
        _bytes_out("pSignature", "pulSignatureLen"), _len_ptr("pulSignatureLen")),
    _fn("C_SignMessageBegin", "3.0", _session(), *_message_param()),
    _fn("C_SignMessageNext", "3.0", _session(), *_message_param(),
        _bytes_in("pData", "ulDataLen"), _len("ulDataLen"),
        _bytes_out("pSignature", "pulSignatureLen"), _len_ptr("pulSignatureLen")),
    _session_only("C_MessageSignFinal", "3.0"),
    _init("C_MessageVerifyInit", "3.0"),
    _fn("C_VerifyMessage", "3.0", _session(), *_message_param(),
        _bytes_in("pData", "ulDataLen"), _len("ulDataLen"),
        _bytes_in("pSignature", "ulSignatureLen"), _len("ulSignatureLen")),
    _fn("C_VerifyMessageBegin", "3.0", _session(), *_message_param()),
    _fn("C_VerifyMessageNext", "3.0", _session(), *_message_param(),
        _bytes_in("pData", "ulDataLen"), _len("ulDataLen"),
        _bytes_in("pSignature", "ulSignatureLen"), _len("ulSignatureLen")),
    _session_only("C_MessageVerifyFinal", "3.0"),
    # --- CK_FUNCTION_LIST_3_2 additions: 12 entries ------------------------------------------
    _fn("C_EncapsulateKey", "3.2", _session(), _mech(), _obj("hPublicKey"),
        _template("pTemplate", "ulAttributeCount", KEY_TEMPLATE), _len("ulAttributeCount"),
        _bytes_out("pCiphertext", "pulCiphertextLen"), _len_ptr("pulCiphertextLen"),
        _obj_out("phKey")),
    _fn("C_DecapsulateKey", "3.2", _session(), _mech(), _obj("hPrivateKey"),
        _template("pTemplate", "ulAttributeCount", KEY_TEMPLATE), _len("ulAttributeCount"),
        _bytes_in("pCiphertext", "ulCiphertextLen"), _len("ulCiphertextLen"),
        _obj_out("phKey")),
    _fn("C_VerifySignatureInit", "3.2", _session(), _mech(), _obj("hKey"),
        _bytes_in("pSignature", "ulSignatureLen"), _len("ulSignatureLen")),
    _feed("C_VerifySignature", "3.2", "pData"),
    _feed("C_VerifySignatureUpdate", "3.2", "pPart"),
    _session_only("C_VerifySignatureFinal", "3.2"),
    _fn("C_GetSessionValidationFlags", "3.2", _session(),
        Param("type", "CK_SESSION_VALIDATION_FLAGS_TYPE", Role.ENUM, kind="CKS_VALIDATION"),
        Param("pFlags", "CK_FLAGS_PTR", Role.ULONG_OUT)),
    _fn("C_AsyncComplete", "3.2", _session(),
        Param("pFunctionName", "CK_UTF8CHAR_PTR", Role.CSTRING),
        _struct_out("pResult", "CK_ASYNC_DATA_PTR", "CK_ASYNC_DATA")),
    _fn("C_AsyncGetID", "3.2", _session(),
        Param("pFunctionName", "CK_UTF8CHAR_PTR", Role.CSTRING),
        Param("pulID", "CK_ULONG_PTR", Role.ULONG_OUT)),
    # pData receives the joined operation's result; its room is the input ulData. When the
    # call answers CKR_PENDING the result arrives later, through C_AsyncComplete.
    _fn("C_AsyncJoin", "3.2", _session(),
        Param("pFunctionName", "CK_UTF8CHAR_PTR", Role.CSTRING),
        Param("ulID", "CK_ULONG", Role.ULONG),
        Param("pData", "CK_BYTE_PTR", Role.BYTES_OUT_FIXED, length="ulData"),
        _len("ulData")),
    _fn("C_WrapKeyAuthenticated", "3.2", _session(), _mech(), _obj("hWrappingKey"),
        _obj("hKey"),
        _bytes_in("pAssociatedData", "ulAssociatedDataLen"), _len("ulAssociatedDataLen"),
        _bytes_out("pWrappedKey", "pulWrappedKeyLen"), _len_ptr("pulWrappedKeyLen")),
    _fn("C_UnwrapKeyAuthenticated", "3.2", _session(), _mech(), _obj("hUnwrappingKey"),
        _bytes_in("pWrappedKey", "ulWrappedKeyLen"), _len("ulWrappedKeyLen"),
        _template("pTemplate", "ulAttributeCount", KEY_TEMPLATE), _len("ulAttributeCount"),
        _bytes_in("pAssociatedData", "ulAssociatedDataLen"), _len("ulAssociatedDataLen"),
        _obj_out("phKey")),
]

FUNCTIONS: tuple[Function, ...] = tuple(
    dataclasses.replace(fn, index=i) for i, fn in enumerate(_TABLE)
)

BY_NAME: dict[str, Function] = {fn.name: fn for fn in FUNCTIONS}


def functions_in(version: str) -> tuple[Function, ...]:
    """The entries of the function list of a version, in list order: CK_FUNCTION_LIST for
    "2.40", CK_FUNCTION_LIST_3_0 for "3.0", CK_FUNCTION_LIST_3_2 for "3.2"."""
    if version not in VERSIONS:
        raise ValueError(f"unknown PKCS#11 function list version {version!r}")
    wanted = VERSIONS[: VERSIONS.index(version) + 1]
    return tuple(fn for fn in FUNCTIONS if fn.since in wanted)


# Size parameters that are not referenced by exactly one other parameter. PKCS#11 has none
# in its function list today; an entry here would be (function name, parameter name).
UNPAIRED_SIZES: frozenset[tuple[str, str]] = frozenset()

_NEEDS_LENGTH = frozenset({
    Role.BYTES_IN, Role.BYTES_INOUT, Role.PIN, Role.BYTES_OUT, Role.BYTES_OUT_FIXED,
    Role.TEMPLATE_IN, Role.TEMPLATE_INOUT, Role.ARRAY_OUT, Role.INTERFACE_LIST_OUT,
})


def check(table: tuple[Function, ...] = FUNCTIONS) -> None:
    """Raise ValueError if the table is inconsistent: wrapper generation and decoding both rely
    on every size being found by name, and on list positions being exact."""
    seen: set[str] = set()
    for i, fn in enumerate(table):
        if fn.index != i:
            raise ValueError(f"{fn.name}: index {fn.index}, position {i}")
        if fn.name in seen:
            raise ValueError(f"{fn.name} listed twice")
        seen.add(fn.name)
        if fn.since not in VERSIONS:
            raise ValueError(f"{fn.name}: unknown version {fn.since!r}")
        by_name = {p.name: p for p in fn.params}
        if len(by_name) != len(fn.params):
            raise ValueError(f"{fn.name}: duplicate parameter names")
        uses: dict[str, int] = {}
        for p in fn.params:
            if not isinstance(p.role, Role):
                raise ValueError(f"{fn.name}.{p.name}: no role")
            if p.role in _NEEDS_LENGTH and p.length is None:
                raise ValueError(f"{fn.name}.{p.name}: {p.role} needs a length")
            for ref in (p.length, p.capacity):
                if ref is None:
                    continue
                target = by_name.get(ref)
                if target is None or target.role not in (Role.LENGTH, Role.LENGTH_PTR):
                    raise ValueError(f"{fn.name}.{p.name}: {ref} is not a size parameter")
                uses[ref] = uses.get(ref, 0) + 1
        for p in fn.params:
            if p.role in (Role.LENGTH, Role.LENGTH_PTR) and (fn.name, p.name) not in UNPAIRED_SIZES:
                if uses.get(p.name, 0) != 1:
                    raise ValueError(
                        f"{fn.name}.{p.name}: referenced {uses.get(p.name, 0)} times, not once")
    # Later versions only append: each version's list is a prefix of the next one's.
    ranks = [VERSIONS.index(fn.since) for fn in table]
    if ranks != sorted(ranks):
        raise ValueError("a function of a later version comes before an earlier one")


check()
