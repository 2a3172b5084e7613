"""The function and struct tables against the PKCS#11 facts they encode.

The shim's wrappers and function list are generated from these tables and the decoder reads
records with them, so a wrong name, type, order or size here is a wrong trace (or a crash)
there. The expected values below were transcribed from the OASIS PKCS#11 3.2 headers, not
computed from the tables.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import cffi
import pytest

from p11spy.facts.pkcs11 import constants, functions, structs
from p11spy.facts.pkcs11.functions import BY_NAME, FUNCTIONS, functions_in
from p11spy.facts.pkcs11.model import Param, Role

# --- counts, order, indexes --------------------------------------------------------------------

# Every entry of CK_FUNCTION_LIST_3_2 after `version`, in order, with its parameter names.
EXPECTED = """
C_Initialize pInitArgs
C_Finalize pReserved
C_GetInfo pInfo
C_GetFunctionList ppFunctionList
C_GetSlotList tokenPresent pSlotList pulCount
C_GetSlotInfo slotID pInfo
C_GetTokenInfo slotID pInfo
C_GetMechanismList slotID pMechanismList pulCount
C_GetMechanismInfo slotID type pInfo
C_InitToken slotID pPin ulPinLen pLabel
C_InitPIN hSession pPin ulPinLen
C_SetPIN hSession pOldPin ulOldLen pNewPin ulNewLen
C_OpenSession slotID flags pApplication Notify phSession
C_CloseSession hSession
C_CloseAllSessions slotID
C_GetSessionInfo hSession pInfo
C_GetOperationState hSession pOperationState pulOperationStateLen
C_SetOperationState hSession pOperationState ulOperationStateLen hEncryptionKey
    hAuthenticationKey
C_Login hSession userType pPin ulPinLen
C_Logout hSession
C_CreateObject hSession pTemplate ulCount phObject
C_CopyObject hSession hObject pTemplate ulCount phNewObject
C_DestroyObject hSession hObject
C_GetObjectSize hSession hObject pulSize
C_GetAttributeValue hSession hObject pTemplate ulCount
C_SetAttributeValue hSession hObject pTemplate ulCount
C_FindObjectsInit hSession pTemplate ulCount
C_FindObjects hSession phObject ulMaxObjectCount pulObjectCount
C_FindObjectsFinal hSession
C_EncryptInit hSession pMechanism hKey
C_Encrypt hSession pData ulDataLen pEncryptedData pulEncryptedDataLen
C_EncryptUpdate hSession pPart ulPartLen pEncryptedPart pulEncryptedPartLen
C_EncryptFinal hSession pLastEncryptedPart pulLastEncryptedPartLen
C_DecryptInit hSession pMechanism hKey
C_Decrypt hSession pEncryptedData ulEncryptedDataLen pData pulDataLen
C_DecryptUpdate hSession pEncryptedPart ulEncryptedPartLen pPart pulPartLen
C_DecryptFinal hSession pLastPart pulLastPartLen
C_DigestInit hSession pMechanism
C_Digest hSession pData ulDataLen pDigest pulDigestLen
C_DigestUpdate hSession pPart ulPartLen
C_DigestKey hSession hKey
C_DigestFinal hSession pDigest pulDigestLen
C_SignInit hSession pMechanism hKey
C_Sign hSession pData ulDataLen pSignature pulSignatureLen
C_SignUpdate hSession pPart ulPartLen
C_SignFinal hSession pSignature pulSignatureLen
C_SignRecoverInit hSession pMechanism hKey
C_SignRecover hSession pData ulDataLen pSignature pulSignatureLen
C_VerifyInit hSession pMechanism hKey
C_Verify hSession pData ulDataLen pSignature ulSignatureLen
C_VerifyUpdate hSession pPart ulPartLen
C_VerifyFinal hSession pSignature ulSignatureLen
C_VerifyRecoverInit hSession pMechanism hKey
C_VerifyRecover hSession pSignature ulSignatureLen pData pulDataLen
C_DigestEncryptUpdate hSession pPart ulPartLen pEncryptedPart pulEncryptedPartLen
C_DecryptDigestUpdate hSession pEncryptedPart ulEncryptedPartLen pPart pulPartLen
C_SignEncryptUpdate hSession pPart ulPartLen pEncryptedPart pulEncryptedPartLen
C_DecryptVerifyUpdate hSession pEncryptedPart ulEncryptedPartLen pPart pulPartLen
C_GenerateKey hSession pMechanism pTemplate ulCount phKey
C_GenerateKeyPair hSession pMechanism pPublicKeyTemplate ulPublicKeyAttributeCount
    pPrivateKeyTemplate ulPrivateKeyAttributeCount phPublicKey phPrivateKey
C_WrapKey hSession pMechanism hWrappingKey hKey pWrappedKey pulWrappedKeyLen
C_UnwrapKey hSession pMechanism hUnwrappingKey pWrappedKey ulWrappedKeyLen pTemplate
    ulAttributeCount phKey
C_DeriveKey hSession pMechanism hBaseKey pTemplate ulAttributeCount phKey
C_SeedRandom hSession pSeed ulSeedLen
C_GenerateRandom hSession RandomData ulRandomLen
C_GetFunctionStatus hSession
C_CancelFunction hSession
C_WaitForSlotEvent flags pSlot pReserved
C_GetInterfaceList pInterfacesList pulCount
C_GetInterface pInterfaceName pVersion ppInterface flags
C_LoginUser hSession userType pPin ulPinLen pUsername ulUsernameLen
C_SessionCancel hSession flags
C_MessageEncryptInit hSession pMechanism hKey
C_EncryptMessage hSession pParameter ulParameterLen pAssociatedData ulAssociatedDataLen
    pPlaintext ulPlaintextLen pCiphertext pulCiphertextLen
C_EncryptMessageBegin hSession pParameter ulParameterLen pAssociatedData ulAssociatedDataLen
C_EncryptMessageNext hSession pParameter ulParameterLen pPlaintextPart ulPlaintextPartLen
    pCiphertextPart pulCiphertextPartLen flags
C_MessageEncryptFinal hSession
C_MessageDecryptInit hSession pMechanism hKey
C_DecryptMessage hSession pParameter ulParameterLen pAssociatedData ulAssociatedDataLen
    pCiphertext ulCiphertextLen pPlaintext pulPlaintextLen
C_DecryptMessageBegin hSession pParameter ulParameterLen pAssociatedData ulAssociatedDataLen
C_DecryptMessageNext hSession pParameter ulParameterLen pCiphertextPart ulCiphertextPartLen
    pPlaintextPart pulPlaintextPartLen flags
C_MessageDecryptFinal hSession
C_MessageSignInit hSession pMechanism hKey
C_SignMessage hSession pParameter ulParameterLen pData ulDataLen pSignature pulSignatureLen
C_SignMessageBegin hSession pParameter ulParameterLen
C_SignMessageNext hSession pParameter ulParameterLen pData ulDataLen pSignature
    pulSignatureLen
C_MessageSignFinal hSession
C_MessageVerifyInit hSession pMechanism hKey
C_VerifyMessage hSession pParameter ulParameterLen pData ulDataLen pSignature ulSignatureLen
C_VerifyMessageBegin hSession pParameter ulParameterLen
C_VerifyMessageNext hSession pParameter ulParameterLen pData ulDataLen pSignature
    ulSignatureLen
C_MessageVerifyFinal hSession
C_EncapsulateKey hSession pMechanism hPublicKey pTemplate ulAttributeCount pCiphertext
    pulCiphertextLen phKey
C_DecapsulateKey hSession pMechanism hPrivateKey pTemplate ulAttributeCount pCiphertext
    ulCiphertextLen phKey
C_VerifySignatureInit hSession pMechanism hKey pSignature ulSignatureLen
C_VerifySignature hSession pData ulDataLen
C_VerifySignatureUpdate hSession pPart ulPartLen
C_VerifySignatureFinal hSession
C_GetSessionValidationFlags hSession type pFlags
C_AsyncComplete hSession pFunctionName pResult
C_AsyncGetID hSession pFunctionName pulID
C_AsyncJoin hSession pFunctionName ulID pData ulData
C_WrapKeyAuthenticated hSession pMechanism hWrappingKey hKey pAssociatedData
    ulAssociatedDataLen pWrappedKey pulWrappedKeyLen
C_UnwrapKeyAuthenticated hSession pMechanism hUnwrappingKey pWrappedKey ulWrappedKeyLen
    pTemplate ulAttributeCount pAssociatedData ulAssociatedDataLen phKey
"""


def _expected() -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for line in EXPECTED.strip().splitlines():
        words = line.split()
        if line.startswith(" "):
            out[-1][1].extend(words)
        else:
            out.append((words[0], words[1:]))
    return out


def test_counts():
    assert len(functions_in("2.40")) == 68  # CK_FUNCTION_LIST, C_GetFunctionList included
    assert len(functions_in("3.0")) == 68 + 24
    assert len(functions_in("3.2")) == 68 + 24 + 12
    assert len(FUNCTIONS) == 104
    assert functions_in("3.2") == FUNCTIONS
    assert [fn.since for fn in FUNCTIONS] == ["2.40"] * 68 + ["3.0"] * 24 + ["3.2"] * 12


def test_unknown_version():
    with pytest.raises(ValueError):
        functions_in("3.1")


def test_lists_are_prefixes():
    assert functions_in("3.0")[:68] == functions_in("2.40")
    assert functions_in("3.2")[:92] == functions_in("3.0")


def test_first_and_last_of_each_list():
    v240, v30, v32 = functions_in("2.40"), functions_in("3.0"), functions_in("3.2")
    assert (v240[0].name, v240[-1].name) == ("C_Initialize", "C_WaitForSlotEvent")
    assert (v30[68].name, v30[-1].name) == ("C_GetInterfaceList", "C_MessageVerifyFinal")
    assert (v32[92].name, v32[-1].name) == ("C_EncapsulateKey", "C_UnwrapKeyAuthenticated")


@pytest.mark.parametrize("name, index", [
    ("C_Initialize", 0),
    ("C_Finalize", 1),
    ("C_GetInfo", 2),
    ("C_GetFunctionList", 3),
    ("C_OpenSession", 12),
    ("C_Login", 18),
    ("C_GetAttributeValue", 24),
    ("C_FindObjects", 27),
    ("C_EncryptInit", 29),
    ("C_Sign", 43),
    ("C_Verify", 49),
    ("C_GenerateKeyPair", 59),
    ("C_GenerateRandom", 64),
    ("C_WaitForSlotEvent", 67),
    ("C_GetInterfaceList", 68),
    ("C_GetInterface", 69),
    ("C_LoginUser", 70),
    ("C_SessionCancel", 71),
    ("C_EncryptMessage", 73),
    ("C_MessageVerifyFinal", 91),
    ("C_EncapsulateKey", 92),
    ("C_VerifySignatureInit", 94),
    ("C_GetSessionValidationFlags", 98),
    ("C_AsyncJoin", 101),
    ("C_WrapKeyAuthenticated", 102),
    ("C_UnwrapKeyAuthenticated", 103),
])
def test_index(name, index):
    assert BY_NAME[name].index == index
    assert FUNCTIONS[index].name == name


def test_order_and_parameter_names():
    expected = _expected()
    assert [name for name, _ in expected] == [fn.name for fn in FUNCTIONS]
    for (name, params), fn in zip(expected, FUNCTIONS, strict=True):
        assert [p.name for p in fn.params] == params, name


def test_index_is_position_and_by_name_complete():
    assert [fn.index for fn in FUNCTIONS] == list(range(len(FUNCTIONS)))
    assert list(BY_NAME) == [fn.name for fn in FUNCTIONS]


# --- a handful of functions written out in full -------------------------------------------------

SESSION = Param("hSession", "CK_SESSION_HANDLE", Role.HANDLE, kind="session")
SLOT = Param("slotID", "CK_SLOT_ID", Role.HANDLE, kind="slot")
MECHANISM = Param("pMechanism", "CK_MECHANISM_PTR", Role.MECHANISM)

FULL = {
    "C_Login": (
        SESSION,
        Param("userType", "CK_USER_TYPE", Role.ENUM, kind="CKU"),
        Param("pPin", "CK_UTF8CHAR_PTR", Role.PIN, length="ulPinLen"),
        Param("ulPinLen", "CK_ULONG", Role.LENGTH),
    ),
    "C_GetAttributeValue": (
        SESSION,
        Param("hObject", "CK_OBJECT_HANDLE", Role.HANDLE, kind="object"),
        Param("pTemplate", "CK_ATTRIBUTE_PTR", Role.TEMPLATE_INOUT, length="ulCount"),
        Param("ulCount", "CK_ULONG", Role.LENGTH),
    ),
    "C_FindObjects": (
        SESSION,
        Param("phObject", "CK_OBJECT_HANDLE_PTR", Role.ARRAY_OUT, length="pulObjectCount",
              capacity="ulMaxObjectCount", kind="object"),
        Param("ulMaxObjectCount", "CK_ULONG", Role.LENGTH),
        Param("pulObjectCount", "CK_ULONG_PTR", Role.LENGTH_PTR),
    ),
    "C_Sign": (
        SESSION,
        Param("pData", "CK_BYTE_PTR", Role.BYTES_IN, length="ulDataLen"),
        Param("ulDataLen", "CK_ULONG", Role.LENGTH),
        Param("pSignature", "CK_BYTE_PTR", Role.BYTES_OUT, length="pulSignatureLen"),
        Param("pulSignatureLen", "CK_ULONG_PTR", Role.LENGTH_PTR),
    ),
    "C_GenerateKeyPair": (
        SESSION,
        MECHANISM,
        Param("pPublicKeyTemplate", "CK_ATTRIBUTE_PTR", Role.TEMPLATE_IN,
              length="ulPublicKeyAttributeCount"),
        Param("ulPublicKeyAttributeCount", "CK_ULONG", Role.LENGTH),
        Param("pPrivateKeyTemplate", "CK_ATTRIBUTE_PTR", Role.TEMPLATE_IN,
              length="ulPrivateKeyAttributeCount", kind="key"),
        Param("ulPrivateKeyAttributeCount", "CK_ULONG", Role.LENGTH),
        Param("phPublicKey", "CK_OBJECT_HANDLE_PTR", Role.HANDLE_OUT, kind="object"),
        Param("phPrivateKey", "CK_OBJECT_HANDLE_PTR", Role.HANDLE_OUT, kind="object"),
    ),
    "C_EncryptMessage": (
        SESSION,
        Param("pParameter", "CK_VOID_PTR", Role.BYTES_INOUT, length="ulParameterLen"),
        Param("ulParameterLen", "CK_ULONG", Role.LENGTH),
        Param("pAssociatedData", "CK_BYTE_PTR", Role.BYTES_IN, length="ulAssociatedDataLen"),
        Param("ulAssociatedDataLen", "CK_ULONG", Role.LENGTH),
        Param("pPlaintext", "CK_BYTE_PTR", Role.BYTES_IN, length="ulPlaintextLen"),
        Param("ulPlaintextLen", "CK_ULONG", Role.LENGTH),
        Param("pCiphertext", "CK_BYTE_PTR", Role.BYTES_OUT, length="pulCiphertextLen"),
        Param("pulCiphertextLen", "CK_ULONG_PTR", Role.LENGTH_PTR),
    ),
    "C_GetInterface": (
        Param("pInterfaceName", "CK_UTF8CHAR_PTR", Role.CSTRING),
        Param("pVersion", "CK_VERSION_PTR", Role.STRUCT_IN, struct="CK_VERSION"),
        Param("ppInterface", "CK_INTERFACE_PTR_PTR", Role.INTERFACE_OUT),
        Param("flags", "CK_FLAGS", Role.FLAGS, kind="CKF_INTERFACE"),
    ),
    "C_InitToken": (
        SLOT,
        Param("pPin", "CK_UTF8CHAR_PTR", Role.PIN, length="ulPinLen"),
        Param("ulPinLen", "CK_ULONG", Role.LENGTH),
        Param("pLabel", "CK_UTF8CHAR_PTR", Role.TEXT_FIXED, size=32),
    ),
    "C_SetPIN": (
        SESSION,
        Param("pOldPin", "CK_UTF8CHAR_PTR", Role.PIN, length="ulOldLen"),
        Param("ulOldLen", "CK_ULONG", Role.LENGTH),
        Param("pNewPin", "CK_UTF8CHAR_PTR", Role.PIN, length="ulNewLen"),
        Param("ulNewLen", "CK_ULONG", Role.LENGTH),
    ),
    "C_GenerateRandom": (
        SESSION,
        Param("RandomData", "CK_BYTE_PTR", Role.BYTES_OUT_FIXED, length="ulRandomLen"),
        Param("ulRandomLen", "CK_ULONG", Role.LENGTH),
    ),
    "C_GetSlotList": (
        Param("tokenPresent", "CK_BBOOL", Role.BOOL),
        Param("pSlotList", "CK_SLOT_ID_PTR", Role.ARRAY_OUT, length="pulCount", kind="slot"),
        Param("pulCount", "CK_ULONG_PTR", Role.LENGTH_PTR),
    ),
    "C_EncapsulateKey": (
        SESSION,
        MECHANISM,
        Param("hPublicKey", "CK_OBJECT_HANDLE", Role.HANDLE, kind="object"),
        Param("pTemplate", "CK_ATTRIBUTE_PTR", Role.TEMPLATE_IN, length="ulAttributeCount",
              kind="key"),
        Param("ulAttributeCount", "CK_ULONG", Role.LENGTH),
        Param("pCiphertext", "CK_BYTE_PTR", Role.BYTES_OUT, length="pulCiphertextLen"),
        Param("pulCiphertextLen", "CK_ULONG_PTR", Role.LENGTH_PTR),
        Param("phKey", "CK_OBJECT_HANDLE_PTR", Role.HANDLE_OUT, kind="object"),
    ),
    "C_AsyncJoin": (
        SESSION,
        Param("pFunctionName", "CK_UTF8CHAR_PTR", Role.CSTRING),
        Param("ulID", "CK_ULONG", Role.ULONG),
        Param("pData", "CK_BYTE_PTR", Role.BYTES_OUT_FIXED, length="ulData"),
        Param("ulData", "CK_ULONG", Role.LENGTH),
    ),
}


@pytest.mark.parametrize("name", sorted(FULL))
def test_function_in_full(name):
    assert BY_NAME[name].params == FULL[name]


@pytest.mark.parametrize("name, param, role, kind", [
    ("C_OpenSession", "flags", Role.FLAGS, "CKF_SESSION"),
    ("C_OpenSession", "phSession", Role.HANDLE_OUT, "session"),
    ("C_WaitForSlotEvent", "flags", Role.FLAGS, "CKF_WAIT"),
    ("C_WaitForSlotEvent", "pSlot", Role.HANDLE_OUT, "slot"),
    ("C_SessionCancel", "flags", Role.FLAGS, "CKF_MECHANISM"),
    ("C_EncryptMessageNext", "flags", Role.FLAGS, "CKF_MESSAGE"),
    ("C_DecryptMessageNext", "flags", Role.FLAGS, "CKF_MESSAGE"),
    ("C_GetMechanismInfo", "type", Role.ENUM, "CKM"),
    ("C_GetMechanismList", "pMechanismList", Role.ARRAY_OUT, "CKM"),
    ("C_GetSessionValidationFlags", "type", Role.ENUM, "CKS_VALIDATION"),
    ("C_LoginUser", "userType", Role.ENUM, "CKU"),
    ("C_CreateObject", "phObject", Role.HANDLE_OUT, "object"),
    ("C_CopyObject", "phNewObject", Role.HANDLE_OUT, "object"),
])
def test_kinds(name, param, role, kind):
    p = BY_NAME[name].param(param)
    assert (p.role, p.kind) == (role, kind)


def test_special_roles():
    assert BY_NAME["C_Initialize"].param("pInitArgs").role is Role.INIT_ARGS
    assert BY_NAME["C_GetFunctionList"].param("ppFunctionList").role is Role.FUNCTION_LIST_OUT
    lst = BY_NAME["C_GetInterfaceList"].param("pInterfacesList")
    assert (lst.role, lst.length) == (Role.INTERFACE_LIST_OUT, "pulCount")
    assert BY_NAME["C_LoginUser"].param("pUsername").role is Role.BYTES_IN
    assert BY_NAME["C_GetObjectSize"].param("pulSize").role is Role.ULONG_OUT
    assert BY_NAME["C_AsyncGetID"].param("pulID").role is Role.ULONG_OUT
    assert BY_NAME["C_GetSessionValidationFlags"].param("pFlags").ctype == "CK_FLAGS_PTR"
    result = BY_NAME["C_AsyncComplete"].param("pResult")
    assert (result.role, result.struct) == (Role.STRUCT_OUT, "CK_ASYNC_DATA")
    for fn, name in [("C_Finalize", "pReserved"), ("C_OpenSession", "pApplication"),
                     ("C_OpenSession", "Notify"), ("C_WaitForSlotEvent", "pReserved")]:
        assert BY_NAME[fn].param(name).role is Role.POINTER
    for fn in ("C_GetInfo", "C_GetSlotInfo", "C_GetTokenInfo", "C_GetSessionInfo",
               "C_GetMechanismInfo"):
        p = BY_NAME[fn].param("pInfo")
        assert p.role is Role.STRUCT_OUT
        assert p.ctype == p.struct + "_PTR"


# --- consistency of the whole table -----------------------------------------------------------

HANDLE_KINDS = {"slot", "session", "object"}


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.name)
def test_every_param_is_described(fn):
    for p in fn.params:
        assert isinstance(p.role, Role), (fn.name, p.name)
        assert p.name and p.ctype, (fn.name, p.name)
        if p.role is Role.LENGTH:
            assert p.ctype == "CK_ULONG", (fn.name, p.name)
        if p.role is Role.LENGTH_PTR:
            assert p.ctype == "CK_ULONG_PTR", (fn.name, p.name)
        if p.role in (Role.HANDLE, Role.HANDLE_OUT):
            assert p.kind in HANDLE_KINDS, (fn.name, p.name)
        if p.role in (Role.ENUM, Role.FLAGS):
            assert p.kind in constants.FAMILIES, (fn.name, p.name, p.kind)
        if p.role is Role.ARRAY_OUT:
            assert p.kind in HANDLE_KINDS | set(constants.FAMILIES), (fn.name, p.name)
        if p.role in (Role.STRUCT_IN, Role.STRUCT_OUT):
            assert p.struct in structs.STRUCTS, (fn.name, p.name)
        if p.role is Role.TEXT_FIXED:
            assert p.size, (fn.name, p.name)


def test_sessions_first():
    """Every function taking a session takes it first, as the shim's records assume."""
    for fn in FUNCTIONS:
        names = [p.name for p in fn.params]
        if "hSession" in names:
            assert names[0] == "hSession", fn.name


def _replace_param(fn_name: str, param: str, **changes):
    table = list(FUNCTIONS)
    fn = BY_NAME[fn_name]
    params = tuple(dataclasses.replace(p, **changes) if p.name == param else p
                   for p in fn.params)
    table[fn.index] = dataclasses.replace(fn, params=params)
    return tuple(table)


def test_check_accepts_table():
    functions.check()


@pytest.mark.parametrize("fn_name, param, changes", [
    ("C_Sign", "pData", {"length": "ulDataLength"}),          # names no parameter
    ("C_Sign", "pData", {"length": "pSignature"}),            # names a non-size parameter
    ("C_Sign", "pData", {"length": None}),                    # buffer without a size
    ("C_Sign", "ulDataLen", {"role": Role.ULONG}),            # size no longer a size
    ("C_FindObjects", "phObject", {"capacity": None}),        # ulMaxObjectCount orphaned
    ("C_Verify", "pSignature", {"length": "ulDataLen"}),      # ulDataLen used twice
])
def test_check_rejects(fn_name, param, changes):
    with pytest.raises(ValueError):
        functions.check(_replace_param(fn_name, param, **changes))


def test_check_rejects_wrong_index():
    table = list(FUNCTIONS)
    table[0], table[1] = table[1], table[0]
    with pytest.raises(ValueError):
        functions.check(tuple(table))


# --- CDEF ---------------------------------------------------------------------------------------


def test_cdef_is_plain():
    assert "#" not in structs.CDEF
    assert "/*" not in structs.CDEF and "//" not in structs.CDEF
    assert "CK_FUNCTION_LIST" not in structs.CDEF
    assert structs.CDEF.isascii()


def test_cdef_loads_in_cffi():
    cffi.FFI().cdef(structs.CDEF)


def test_ffi_for_layout_is_cached_and_reads_bytes():
    ffi = structs.ffi_for_layout()
    assert ffi is structs.ffi_for_layout()
    v = ffi.from_buffer("CK_VERSION *", bytearray(b"\x03\x02"))
    assert (v.major, v.minor) == (3, 2)


def test_every_ctype_is_declared():
    ffi = structs.ffi_for_layout()
    for fn in FUNCTIONS:
        for p in fn.params:
            if p.role is Role.FUNCTION_LIST_OUT:
                continue  # the function-list types are generated from this table
            ffi.typeof(p.ctype)


BASIC_TYPES = {
    "CK_BYTE": "unsigned char", "CK_CHAR": "unsigned char", "CK_UTF8CHAR": "unsigned char",
    "CK_BBOOL": "unsigned char", "CK_ULONG": "unsigned long", "CK_LONG": "long",
    "CK_FLAGS": "unsigned long", "CK_RV": "unsigned long", "CK_SLOT_ID": "unsigned long",
    "CK_SESSION_HANDLE": "unsigned long", "CK_OBJECT_HANDLE": "unsigned long",
    "CK_OBJECT_CLASS": "unsigned long", "CK_KEY_TYPE": "unsigned long",
    "CK_CERTIFICATE_TYPE": "unsigned long", "CK_HW_FEATURE_TYPE": "unsigned long",
    "CK_MECHANISM_TYPE": "unsigned long", "CK_ATTRIBUTE_TYPE": "unsigned long",
    "CK_USER_TYPE": "unsigned long", "CK_STATE": "unsigned long",
    "CK_NOTIFICATION": "unsigned long", "CK_EC_KDF_TYPE": "unsigned long",
    "CK_RSA_PKCS_MGF_TYPE": "unsigned long", "CK_RSA_PKCS_OAEP_SOURCE_TYPE": "unsigned long",
    "CK_GENERATOR_FUNCTION": "unsigned long", "CK_PROFILE_ID": "unsigned long",
    "CK_PKCS5_PBKDF2_SALT_SOURCE_TYPE": "unsigned long",
    "CK_PKCS5_PBKD2_PSEUDO_RANDOM_FUNCTION_TYPE": "unsigned long",
    "CK_SESSION_VALIDATION_FLAGS_TYPE": "unsigned long", "CK_HEDGE_TYPE": "unsigned long",
}


@pytest.mark.parametrize("name, base", sorted(BASIC_TYPES.items()))
def test_basic_types(name, base):
    ffi = structs.ffi_for_layout()
    assert ffi.typeof(name) is ffi.typeof(base)


# Measured with gcc on x86_64 Linux (LP64) from CDEF written to a header:
# name -> (sizeof, {field: offsetof} for a few fields).
LAYOUT = {
    "CK_VERSION": (2, {"minor": 1}),
    "CK_INFO": (88, {"manufacturerID": 2, "flags": 40, "libraryDescription": 48,
                     "libraryVersion": 80}),
    "CK_SLOT_INFO": (112, {"manufacturerID": 64, "flags": 96, "hardwareVersion": 104,
                           "firmwareVersion": 106}),
    "CK_TOKEN_INFO": (208, {"model": 64, "serialNumber": 80, "flags": 96,
                            "ulMaxSessionCount": 104, "ulFreePrivateMemory": 176,
                            "hardwareVersion": 184, "firmwareVersion": 186, "utcTime": 188}),
    "CK_SESSION_INFO": (32, {"state": 8, "flags": 16, "ulDeviceError": 24}),
    "CK_MECHANISM_INFO": (24, {"flags": 16}),
    "CK_ATTRIBUTE": (24, {"pValue": 8, "ulValueLen": 16}),
    "CK_MECHANISM": (24, {"pParameter": 8, "ulParameterLen": 16}),
    "CK_DATE": (8, {"month": 4, "day": 6}),
    "CK_C_INITIALIZE_ARGS": (48, {"flags": 32, "pReserved": 40}),
    "CK_INTERFACE": (24, {"pFunctionList": 8, "flags": 16}),
    "CK_ASYNC_DATA": (40, {"pValue": 8, "ulValue": 16, "hAdditionalObject": 32}),
    "CK_GCM_PARAMS": (48, {"pAAD": 24, "ulTagBits": 40}),
    "CK_CCM_PARAMS": (48, {"pNonce": 8, "ulMACLen": 40}),
    "CK_GCM_MESSAGE_PARAMS": (48, {"ivGenerator": 24, "pTag": 32}),
    "CK_CCM_MESSAGE_PARAMS": (56, {"nonceGenerator": 32, "pMAC": 40}),
    "CK_RSA_PKCS_OAEP_PARAMS": (40, {"source": 16, "pSourceData": 24}),
    "CK_RSA_PKCS_PSS_PARAMS": (24, {"sLen": 16}),
    "CK_ECDH1_DERIVE_PARAMS": (40, {"pSharedData": 16, "pPublicData": 32}),
    "CK_AES_CTR_PARAMS": (24, {"cb": 8}),
    "CK_AES_CBC_ENCRYPT_DATA_PARAMS": (32, {"pData": 16, "length": 24}),
    "CK_PKCS5_PBKD2_PARAMS2": (72, {"prf": 32, "pPassword": 56, "ulPasswordLen": 64}),
    "CK_PKCS5_PBKD2_PARAMS": (72, {"pPassword": 56, "ulPasswordLen": 64}),
    "CK_KEY_DERIVATION_STRING_DATA": (16, {"ulLen": 8}),
    "CK_HKDF_PARAMS": (64, {"bExpand": 1, "prfHashMechanism": 8, "hSaltKey": 40,
                            "ulInfoLen": 56}),
    "CK_SIGN_ADDITIONAL_CONTEXT": (24, {"pContext": 8, "ulContextLen": 16}),
    "CK_HASH_SIGN_ADDITIONAL_CONTEXT": (32, {"hash": 24}),
}


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_layout(name):
    ffi = structs.ffi_for_layout()
    size, offsets = LAYOUT[name]
    assert ffi.sizeof(name) == size
    for field, offset in offsets.items():
        assert ffi.offsetof(name, field) == offset, field


def test_every_struct_has_a_layout_check():
    assert set(LAYOUT) == set(structs.STRUCTS)


def test_layout_matches_a_c_compiler(tmp_path: Path):
    """cffi and gcc must agree on every size and offset, CDEF being compiled as C."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    (tmp_path / "cdef.h").write_text(structs.CDEF)
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "cdef.h"', "int main(void) {"]
    for s in structs.STRUCTS.values():
        lines.append(f'printf("{s.name} %zu\\n", sizeof({s.name}));')
        for f in s.fields:
            lines.append(f'printf("{s.name}.{f.name} %zu\\n", offsetof({s.name}, {f.name}));')
    lines += ["return 0;", "}"]
    (tmp_path / "layout.c").write_text("\n".join(lines) + "\n")
    exe = tmp_path / "layout"
    subprocess.run([gcc, "-std=c11", "-Wall", "-Werror", "-pedantic", "-o", str(exe),
                    str(tmp_path / "layout.c")], check=True, capture_output=True)
    got = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    ffi = structs.ffi_for_layout()
    want = []
    for s in structs.STRUCTS.values():
        want.append(f"{s.name} {ffi.sizeof(s.name)}")
        want += [f"{s.name}.{f.name} {ffi.offsetof(s.name, f.name)}" for f in s.fields]
    assert got.splitlines() == want


# --- STRUCTS ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(structs.STRUCTS))
def test_struct_fields_match_cdef(name):
    ffi = structs.ffi_for_layout()
    desc = structs.STRUCTS[name]
    assert desc.name == name
    cfields = ffi.typeof(name).fields
    assert [f.name for f in desc.fields] == [n for n, _ in cfields]
    for f, (_, cf) in zip(desc.fields, cfields, strict=True):
        assert ffi.typeof(f.ctype) is cf.type, (name, f.name)
        assert isinstance(f.role, Role)
        if f.role is Role.TEXT_FIXED or (f.role is Role.BYTES_IN and f.size):
            assert cf.type.kind == "array" and cf.type.length == f.size, (name, f.name)
            assert f.length is None
        if f.role in (Role.BYTES_IN, Role.PIN) and f.size is None:
            assert cf.type.kind == "pointer" and f.length, (name, f.name)
        if f.role in (Role.ENUM, Role.FLAGS):
            assert f.kind in constants.FAMILIES, (name, f.name, f.kind)
        if f.role is Role.HANDLE:
            assert f.kind in HANDLE_KINDS


STRUCT_ROLES = {
    ("CK_RSA_PKCS_OAEP_PARAMS", "hashAlg"): (Role.ENUM, "CKM"),
    ("CK_RSA_PKCS_OAEP_PARAMS", "mgf"): (Role.ENUM, "CKG_MGF"),
    ("CK_RSA_PKCS_OAEP_PARAMS", "source"): (Role.ENUM, "CKZ_DATA"),
    ("CK_RSA_PKCS_PSS_PARAMS", "sLen"): (Role.ULONG, None),
    ("CK_MECHANISM_INFO", "flags"): (Role.FLAGS, "CKF_MECHANISM"),
    ("CK_TOKEN_INFO", "flags"): (Role.FLAGS, "CKF_TOKEN"),
    ("CK_SLOT_INFO", "flags"): (Role.FLAGS, "CKF_SLOT"),
    ("CK_SESSION_INFO", "state"): (Role.ENUM, "CKS"),
    ("CK_SESSION_INFO", "flags"): (Role.FLAGS, "CKF_SESSION"),
    ("CK_SESSION_INFO", "slotID"): (Role.HANDLE, "slot"),
    ("CK_C_INITIALIZE_ARGS", "flags"): (Role.FLAGS, "CKF_INIT_ARGS"),
    ("CK_C_INITIALIZE_ARGS", "CreateMutex"): (Role.POINTER, None),
    ("CK_INTERFACE", "flags"): (Role.FLAGS, "CKF_INTERFACE"),
    ("CK_INTERFACE", "pInterfaceName"): (Role.CSTRING, None),
    ("CK_INTERFACE", "pFunctionList"): (Role.POINTER, None),
    ("CK_ECDH1_DERIVE_PARAMS", "kdf"): (Role.ENUM, "CKD"),
    ("CK_HKDF_PARAMS", "hSaltKey"): (Role.HANDLE, "object"),
    ("CK_ASYNC_DATA", "hObject"): (Role.HANDLE, "object"),
    ("CK_PKCS5_PBKD2_PARAMS2", "pPassword"): (Role.PIN, None),
}


@pytest.mark.parametrize("key", sorted(STRUCT_ROLES))
def test_struct_field_roles(key):
    name, field = key
    f = {f.name: f for f in structs.STRUCTS[name].fields}[field]
    assert (f.role, f.kind) == STRUCT_ROLES[key]


@pytest.mark.parametrize("name, field, size", [
    ("CK_INFO", "manufacturerID", 32), ("CK_INFO", "libraryDescription", 32),
    ("CK_SLOT_INFO", "slotDescription", 64), ("CK_TOKEN_INFO", "label", 32),
    ("CK_TOKEN_INFO", "model", 16), ("CK_TOKEN_INFO", "serialNumber", 16),
    ("CK_TOKEN_INFO", "utcTime", 16),
])
def test_text_fields(name, field, size):
    f = {f.name: f for f in structs.STRUCTS[name].fields}[field]
    assert (f.role, f.size) == (Role.TEXT_FIXED, size)


@pytest.mark.parametrize("name, field, length", [
    ("CK_GCM_PARAMS", "pIv", "ulIvLen"), ("CK_GCM_PARAMS", "pAAD", "ulAADLen"),
    ("CK_CCM_PARAMS", "pNonce", "ulNonceLen"),
    ("CK_RSA_PKCS_OAEP_PARAMS", "pSourceData", "ulSourceDataLen"),
    ("CK_ECDH1_DERIVE_PARAMS", "pSharedData", "ulSharedDataLen"),
    ("CK_ECDH1_DERIVE_PARAMS", "pPublicData", "ulPublicDataLen"),
    ("CK_AES_CBC_ENCRYPT_DATA_PARAMS", "pData", "length"),
    ("CK_KEY_DERIVATION_STRING_DATA", "pData", "ulLen"),
    ("CK_HKDF_PARAMS", "pSalt", "ulSaltLen"), ("CK_HKDF_PARAMS", "pInfo", "ulInfoLen"),
    ("CK_SIGN_ADDITIONAL_CONTEXT", "pContext", "ulContextLen"),
])
def test_pointer_length_pairs(name, field, length):
    fields = {f.name: f for f in structs.STRUCTS[name].fields}
    assert (fields[field].role, fields[field].length) == (Role.BYTES_IN, length)
    assert fields[length].role is Role.LENGTH


def test_mechanism_names_exist():
    ckm = constants.FAMILIES["CKM"]
    for s in structs.STRUCTS.values():
        for m in s.mechanisms:
            ckm.value_of(m)  # KeyError for a misspelt name


@pytest.mark.parametrize("mechanism, struct", [
    ("CKM_AES_GCM", "CK_GCM_PARAMS"),
    ("CKM_AES_CCM", "CK_CCM_PARAMS"),
    ("CKM_RSA_PKCS_OAEP", "CK_RSA_PKCS_OAEP_PARAMS"),
    ("CKM_RSA_PKCS_PSS", "CK_RSA_PKCS_PSS_PARAMS"),
    ("CKM_SHA256_RSA_PKCS_PSS", "CK_RSA_PKCS_PSS_PARAMS"),
    ("CKM_SHA3_512_RSA_PKCS_PSS", "CK_RSA_PKCS_PSS_PARAMS"),
    ("CKM_ECDH1_DERIVE", "CK_ECDH1_DERIVE_PARAMS"),
    ("CKM_ECDH1_COFACTOR_DERIVE", "CK_ECDH1_DERIVE_PARAMS"),
    ("CKM_AES_CTR", "CK_AES_CTR_PARAMS"),
    ("CKM_AES_CBC_ENCRYPT_DATA", "CK_AES_CBC_ENCRYPT_DATA_PARAMS"),
    ("CKM_PKCS5_PBKD2", "CK_PKCS5_PBKD2_PARAMS2"),
    ("CKM_AES_ECB_ENCRYPT_DATA", "CK_KEY_DERIVATION_STRING_DATA"),
    ("CKM_CONCATENATE_DATA_AND_BASE", "CK_KEY_DERIVATION_STRING_DATA"),
    ("CKM_HKDF_DERIVE", "CK_HKDF_PARAMS"),
    ("CKM_HKDF_DATA", "CK_HKDF_PARAMS"),
    ("CKM_ML_DSA", "CK_SIGN_ADDITIONAL_CONTEXT"),
    ("CKM_HASH_ML_DSA_SHA256", "CK_SIGN_ADDITIONAL_CONTEXT"),
    ("CKM_HASH_ML_DSA", "CK_HASH_SIGN_ADDITIONAL_CONTEXT"),
])
def test_struct_for_mechanism(mechanism, struct):
    value = constants.FAMILIES["CKM"].value_of(mechanism)
    assert structs.struct_for_mechanism(value) == struct
    assert structs.MECHANISM_STRUCTS[mechanism] == struct


def test_struct_for_unknown_mechanism():
    assert structs.struct_for_mechanism(constants.FAMILIES["CKM"].value_of("CKM_SHA256")) is None
    assert structs.struct_for_mechanism(0x80001234) is None
