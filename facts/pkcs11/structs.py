"""PKCS#11 types and structs: their C declarations, and a field-by-field description of each.

CDEF is the one C text both sides use: the generated shim compiles it ahead of the function
list it builds from functions.py, and the decoder loads it into cffi (ABI mode) to read
captured struct bytes. It therefore holds plain typedefs and structs only (no preprocessor,
no function prototypes, no CK_FUNCTION_LIST structs: those are generated).

STRUCTS describes every struct's fields with Param roles, so captured structs and mechanism
parameters are copied and rendered generically; a struct's `mechanisms` are the CKM_ names
that take it as their pParameter (the shim follows its pointer fields by that).

Field names, types and order follow the OASIS PKCS#11 3.2 definitions; the layout is LP64
(CK_ULONG is 8 bytes, no packing), as on Linux x86_64.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from .model import Param, Role, Struct

if TYPE_CHECKING:
    import cffi

CDEF = """
typedef unsigned char CK_BYTE;
typedef unsigned char CK_CHAR;
typedef unsigned char CK_UTF8CHAR;
typedef unsigned char CK_BBOOL;
typedef unsigned long CK_ULONG;
typedef long CK_LONG;
typedef CK_ULONG CK_FLAGS;

typedef CK_ULONG CK_RV;
typedef CK_ULONG CK_SLOT_ID;
typedef CK_ULONG CK_SESSION_HANDLE;
typedef CK_ULONG CK_OBJECT_HANDLE;
typedef CK_ULONG CK_OBJECT_CLASS;
typedef CK_ULONG CK_KEY_TYPE;
typedef CK_ULONG CK_CERTIFICATE_TYPE;
typedef CK_ULONG CK_CERTIFICATE_CATEGORY;
typedef CK_ULONG CK_HW_FEATURE_TYPE;
typedef CK_ULONG CK_MECHANISM_TYPE;
typedef CK_ULONG CK_ATTRIBUTE_TYPE;
typedef CK_ULONG CK_USER_TYPE;
typedef CK_ULONG CK_STATE;
typedef CK_ULONG CK_NOTIFICATION;
typedef CK_ULONG CK_EC_KDF_TYPE;
typedef CK_ULONG CK_X9_42_DH_KDF_TYPE;
typedef CK_ULONG CK_RSA_PKCS_MGF_TYPE;
typedef CK_ULONG CK_RSA_PKCS_OAEP_SOURCE_TYPE;
typedef CK_ULONG CK_GENERATOR_FUNCTION;
typedef CK_ULONG CK_PROFILE_ID;
typedef CK_ULONG CK_PKCS5_PBKDF2_SALT_SOURCE_TYPE;
typedef CK_ULONG CK_PKCS5_PBKD2_PSEUDO_RANDOM_FUNCTION_TYPE;
typedef CK_ULONG CK_SESSION_VALIDATION_FLAGS_TYPE;
typedef CK_ULONG CK_HEDGE_TYPE;
typedef CK_ULONG CK_JAVA_MIDP_SECURITY_DOMAIN;
typedef CK_ULONG CK_OTP_PARAM_TYPE;
typedef CK_ULONG CK_PRF_DATA_TYPE;
typedef CK_ULONG CK_SP800_108_DKM_LENGTH_METHOD;
typedef CK_ULONG CK_TRUST;
typedef CK_ULONG CK_VALIDATION_TYPE;
typedef CK_ULONG CK_VALIDATION_AUTHORITY_TYPE;
typedef CK_ULONG CK_ML_DSA_PARAMETER_SET_TYPE;
typedef CK_ULONG CK_ML_KEM_PARAMETER_SET_TYPE;
typedef CK_ULONG CK_SLH_DSA_PARAMETER_SET_TYPE;
typedef CK_ULONG CK_HSS_LEVELS;
typedef CK_ULONG CK_LMS_TYPE;
typedef CK_ULONG CK_LMOTS_TYPE;
typedef CK_ULONG CK_XMSS_PARAMETER_SET_TYPE;
typedef CK_ULONG CK_XMSSMT_PARAMETER_SET_TYPE;

typedef void *CK_VOID_PTR;
typedef CK_VOID_PTR *CK_VOID_PTR_PTR;
typedef CK_BYTE *CK_BYTE_PTR;
typedef CK_CHAR *CK_CHAR_PTR;
typedef CK_UTF8CHAR *CK_UTF8CHAR_PTR;
typedef CK_BBOOL *CK_BBOOL_PTR;
typedef CK_ULONG *CK_ULONG_PTR;
typedef CK_LONG *CK_LONG_PTR;
typedef CK_FLAGS *CK_FLAGS_PTR;
typedef CK_SLOT_ID *CK_SLOT_ID_PTR;
typedef CK_SESSION_HANDLE *CK_SESSION_HANDLE_PTR;
typedef CK_OBJECT_HANDLE *CK_OBJECT_HANDLE_PTR;
typedef CK_OBJECT_CLASS *CK_OBJECT_CLASS_PTR;
typedef CK_KEY_TYPE *CK_KEY_TYPE_PTR;
typedef CK_MECHANISM_TYPE *CK_MECHANISM_TYPE_PTR;
typedef CK_ATTRIBUTE_TYPE *CK_ATTRIBUTE_TYPE_PTR;

typedef CK_RV (*CK_NOTIFY)(CK_SESSION_HANDLE hSession, CK_NOTIFICATION event,
                           CK_VOID_PTR pApplication);
typedef CK_RV (*CK_CREATEMUTEX)(CK_VOID_PTR_PTR ppMutex);
typedef CK_RV (*CK_DESTROYMUTEX)(CK_VOID_PTR pMutex);
typedef CK_RV (*CK_LOCKMUTEX)(CK_VOID_PTR pMutex);
typedef CK_RV (*CK_UNLOCKMUTEX)(CK_VOID_PTR pMutex);

typedef struct CK_VERSION {
    CK_BYTE major;
    CK_BYTE minor;
} CK_VERSION;
typedef CK_VERSION *CK_VERSION_PTR;

typedef struct CK_INFO {
    CK_VERSION cryptokiVersion;
    CK_UTF8CHAR manufacturerID[32];
    CK_FLAGS flags;
    CK_UTF8CHAR libraryDescription[32];
    CK_VERSION libraryVersion;
} CK_INFO;
typedef CK_INFO *CK_INFO_PTR;

typedef struct CK_SLOT_INFO {
    CK_UTF8CHAR slotDescription[64];
    CK_UTF8CHAR manufacturerID[32];
    CK_FLAGS flags;
    CK_VERSION hardwareVersion;
    CK_VERSION firmwareVersion;
} CK_SLOT_INFO;
typedef CK_SLOT_INFO *CK_SLOT_INFO_PTR;

typedef struct CK_TOKEN_INFO {
    CK_UTF8CHAR label[32];
    CK_UTF8CHAR manufacturerID[32];
    CK_UTF8CHAR model[16];
    CK_CHAR serialNumber[16];
    CK_FLAGS flags;
    CK_ULONG ulMaxSessionCount;
    CK_ULONG ulSessionCount;
    CK_ULONG ulMaxRwSessionCount;
    CK_ULONG ulRwSessionCount;
    CK_ULONG ulMaxPinLen;
    CK_ULONG ulMinPinLen;
    CK_ULONG ulTotalPublicMemory;
    CK_ULONG ulFreePublicMemory;
    CK_ULONG ulTotalPrivateMemory;
    CK_ULONG ulFreePrivateMemory;
    CK_VERSION hardwareVersion;
    CK_VERSION firmwareVersion;
    CK_CHAR utcTime[16];
} CK_TOKEN_INFO;
typedef CK_TOKEN_INFO *CK_TOKEN_INFO_PTR;

typedef struct CK_SESSION_INFO {
    CK_SLOT_ID slotID;
    CK_STATE state;
    CK_FLAGS flags;
    CK_ULONG ulDeviceError;
} CK_SESSION_INFO;
typedef CK_SESSION_INFO *CK_SESSION_INFO_PTR;

typedef struct CK_MECHANISM_INFO {
    CK_ULONG ulMinKeySize;
    CK_ULONG ulMaxKeySize;
    CK_FLAGS flags;
} CK_MECHANISM_INFO;
typedef CK_MECHANISM_INFO *CK_MECHANISM_INFO_PTR;

typedef struct CK_ATTRIBUTE {
    CK_ATTRIBUTE_TYPE type;
    CK_VOID_PTR pValue;
    CK_ULONG ulValueLen;
} CK_ATTRIBUTE;
typedef CK_ATTRIBUTE *CK_ATTRIBUTE_PTR;

typedef struct CK_MECHANISM {
    CK_MECHANISM_TYPE mechanism;
    CK_VOID_PTR pParameter;
    CK_ULONG ulParameterLen;
} CK_MECHANISM;
typedef CK_MECHANISM *CK_MECHANISM_PTR;

typedef struct CK_DATE {
    CK_CHAR year[4];
    CK_CHAR month[2];
    CK_CHAR day[2];
} CK_DATE;

typedef struct CK_C_INITIALIZE_ARGS {
    CK_RV (*CreateMutex)(CK_VOID_PTR_PTR ppMutex);
    CK_RV (*DestroyMutex)(CK_VOID_PTR pMutex);
    CK_RV (*LockMutex)(CK_VOID_PTR pMutex);
    CK_RV (*UnlockMutex)(CK_VOID_PTR pMutex);
    CK_FLAGS flags;
    CK_VOID_PTR pReserved;
} CK_C_INITIALIZE_ARGS;
typedef CK_C_INITIALIZE_ARGS *CK_C_INITIALIZE_ARGS_PTR;

typedef struct CK_INTERFACE {
    CK_CHAR_PTR pInterfaceName;
    CK_VOID_PTR pFunctionList;
    CK_FLAGS flags;
} CK_INTERFACE;
typedef CK_INTERFACE *CK_INTERFACE_PTR;
typedef CK_INTERFACE_PTR *CK_INTERFACE_PTR_PTR;

typedef struct CK_ASYNC_DATA {
    CK_ULONG ulVersion;
    CK_BYTE_PTR pValue;
    CK_ULONG ulValue;
    CK_OBJECT_HANDLE hObject;
    CK_OBJECT_HANDLE hAdditionalObject;
} CK_ASYNC_DATA;
typedef CK_ASYNC_DATA *CK_ASYNC_DATA_PTR;

typedef struct CK_GCM_PARAMS {
    CK_BYTE_PTR pIv;
    CK_ULONG ulIvLen;
    CK_ULONG ulIvBits;
    CK_BYTE_PTR pAAD;
    CK_ULONG ulAADLen;
    CK_ULONG ulTagBits;
} CK_GCM_PARAMS;
typedef CK_GCM_PARAMS *CK_GCM_PARAMS_PTR;

typedef struct CK_CCM_PARAMS {
    CK_ULONG ulDataLen;
    CK_BYTE_PTR pNonce;
    CK_ULONG ulNonceLen;
    CK_BYTE_PTR pAAD;
    CK_ULONG ulAADLen;
    CK_ULONG ulMACLen;
} CK_CCM_PARAMS;
typedef CK_CCM_PARAMS *CK_CCM_PARAMS_PTR;

typedef struct CK_GCM_MESSAGE_PARAMS {
    CK_BYTE_PTR pIv;
    CK_ULONG ulIvLen;
    CK_ULONG ulIvFixedBits;
    CK_GENERATOR_FUNCTION ivGenerator;
    CK_BYTE_PTR pTag;
    CK_ULONG ulTagBits;
} CK_GCM_MESSAGE_PARAMS;
typedef CK_GCM_MESSAGE_PARAMS *CK_GCM_MESSAGE_PARAMS_PTR;

typedef struct CK_CCM_MESSAGE_PARAMS {
    CK_ULONG ulDataLen;
    CK_BYTE_PTR pNonce;
    CK_ULONG ulNonceLen;
    CK_ULONG ulNonceFixedBits;
    CK_GENERATOR_FUNCTION nonceGenerator;
    CK_BYTE_PTR pMAC;
    CK_ULONG ulMACLen;
} CK_CCM_MESSAGE_PARAMS;
typedef CK_CCM_MESSAGE_PARAMS *CK_CCM_MESSAGE_PARAMS_PTR;

typedef struct CK_RSA_PKCS_OAEP_PARAMS {
    CK_MECHANISM_TYPE hashAlg;
    CK_RSA_PKCS_MGF_TYPE mgf;
    CK_RSA_PKCS_OAEP_SOURCE_TYPE source;
    CK_VOID_PTR pSourceData;
    CK_ULONG ulSourceDataLen;
} CK_RSA_PKCS_OAEP_PARAMS;
typedef CK_RSA_PKCS_OAEP_PARAMS *CK_RSA_PKCS_OAEP_PARAMS_PTR;

typedef struct CK_RSA_PKCS_PSS_PARAMS {
    CK_MECHANISM_TYPE hashAlg;
    CK_RSA_PKCS_MGF_TYPE mgf;
    CK_ULONG sLen;
} CK_RSA_PKCS_PSS_PARAMS;
typedef CK_RSA_PKCS_PSS_PARAMS *CK_RSA_PKCS_PSS_PARAMS_PTR;

typedef struct CK_ECDH1_DERIVE_PARAMS {
    CK_EC_KDF_TYPE kdf;
    CK_ULONG ulSharedDataLen;
    CK_BYTE_PTR pSharedData;
    CK_ULONG ulPublicDataLen;
    CK_BYTE_PTR pPublicData;
} CK_ECDH1_DERIVE_PARAMS;
typedef CK_ECDH1_DERIVE_PARAMS *CK_ECDH1_DERIVE_PARAMS_PTR;

typedef struct CK_AES_CTR_PARAMS {
    CK_ULONG ulCounterBits;
    CK_BYTE cb[16];
} CK_AES_CTR_PARAMS;
typedef CK_AES_CTR_PARAMS *CK_AES_CTR_PARAMS_PTR;

typedef struct CK_AES_CBC_ENCRYPT_DATA_PARAMS {
    CK_BYTE iv[16];
    CK_BYTE_PTR pData;
    CK_ULONG length;
} CK_AES_CBC_ENCRYPT_DATA_PARAMS;
typedef CK_AES_CBC_ENCRYPT_DATA_PARAMS *CK_AES_CBC_ENCRYPT_DATA_PARAMS_PTR;

typedef struct CK_PKCS5_PBKD2_PARAMS2 {
    CK_PKCS5_PBKDF2_SALT_SOURCE_TYPE saltSource;
    CK_VOID_PTR pSaltSourceData;
    CK_ULONG ulSaltSourceDataLen;
    CK_ULONG iterations;
    CK_PKCS5_PBKD2_PSEUDO_RANDOM_FUNCTION_TYPE prf;
    CK_VOID_PTR pPrfData;
    CK_ULONG ulPrfDataLen;
    CK_UTF8CHAR_PTR pPassword;
    CK_ULONG ulPasswordLen;
} CK_PKCS5_PBKD2_PARAMS2;
typedef CK_PKCS5_PBKD2_PARAMS2 *CK_PKCS5_PBKD2_PARAMS2_PTR;

typedef struct CK_PKCS5_PBKD2_PARAMS {
    CK_PKCS5_PBKDF2_SALT_SOURCE_TYPE saltSource;
    CK_VOID_PTR pSaltSourceData;
    CK_ULONG ulSaltSourceDataLen;
    CK_ULONG iterations;
    CK_PKCS5_PBKD2_PSEUDO_RANDOM_FUNCTION_TYPE prf;
    CK_VOID_PTR pPrfData;
    CK_ULONG ulPrfDataLen;
    CK_UTF8CHAR_PTR pPassword;
    CK_ULONG_PTR ulPasswordLen;
} CK_PKCS5_PBKD2_PARAMS;
typedef CK_PKCS5_PBKD2_PARAMS *CK_PKCS5_PBKD2_PARAMS_PTR;

typedef struct CK_KEY_DERIVATION_STRING_DATA {
    CK_BYTE_PTR pData;
    CK_ULONG ulLen;
} CK_KEY_DERIVATION_STRING_DATA;
typedef CK_KEY_DERIVATION_STRING_DATA *CK_KEY_DERIVATION_STRING_DATA_PTR;

typedef struct CK_HKDF_PARAMS {
    CK_BBOOL bExtract;
    CK_BBOOL bExpand;
    CK_MECHANISM_TYPE prfHashMechanism;
    CK_ULONG ulSaltType;
    CK_BYTE_PTR pSalt;
    CK_ULONG ulSaltLen;
    CK_OBJECT_HANDLE hSaltKey;
    CK_BYTE_PTR pInfo;
    CK_ULONG ulInfoLen;
} CK_HKDF_PARAMS;
typedef CK_HKDF_PARAMS *CK_HKDF_PARAMS_PTR;

typedef struct CK_SIGN_ADDITIONAL_CONTEXT {
    CK_HEDGE_TYPE hedgeVariant;
    CK_BYTE_PTR pContext;
    CK_ULONG ulContextLen;
} CK_SIGN_ADDITIONAL_CONTEXT;
typedef CK_SIGN_ADDITIONAL_CONTEXT *CK_SIGN_ADDITIONAL_CONTEXT_PTR;

typedef struct CK_HASH_SIGN_ADDITIONAL_CONTEXT {
    CK_HEDGE_TYPE hedgeVariant;
    CK_BYTE_PTR pContext;
    CK_ULONG ulContextLen;
    CK_MECHANISM_TYPE hash;
} CK_HASH_SIGN_ADDITIONAL_CONTEXT;
typedef CK_HASH_SIGN_ADDITIONAL_CONTEXT *CK_HASH_SIGN_ADDITIONAL_CONTEXT_PTR;
"""


# Short constructors for field descriptions.


def _ulong(name: str, ctype: str = "CK_ULONG") -> Param:
    return Param(name, ctype, Role.ULONG)


def _enum(name: str, ctype: str, family: str) -> Param:
    return Param(name, ctype, Role.ENUM, kind=family)


def _flags(name: str, family: str, ctype: str = "CK_FLAGS") -> Param:
    return Param(name, ctype, Role.FLAGS, kind=family)


def _len(name: str) -> Param:
    return Param(name, "CK_ULONG", Role.LENGTH)


def _bytes(name: str, length: str, ctype: str = "CK_BYTE_PTR") -> Param:
    return Param(name, ctype, Role.BYTES_IN, length=length)


def _fixed_bytes(name: str, size: int) -> Param:
    return Param(name, f"CK_BYTE[{size}]", Role.BYTES_IN, size=size)


def _text(name: str, size: int, ctype: str = "CK_UTF8CHAR") -> Param:
    return Param(name, f"{ctype}[{size}]", Role.TEXT_FIXED, size=size)


def _version(name: str) -> Param:
    return Param(name, "CK_VERSION", Role.STRUCT_IN, struct="CK_VERSION")


def _obj(name: str) -> Param:
    return Param(name, "CK_OBJECT_HANDLE", Role.HANDLE, kind="object")


def _pointer(name: str, ctype: str) -> Param:
    return Param(name, ctype, Role.POINTER)


_PSS_MECHANISMS = (
    "CKM_RSA_PKCS_PSS",
    "CKM_SHA1_RSA_PKCS_PSS",
    "CKM_SHA224_RSA_PKCS_PSS",
    "CKM_SHA256_RSA_PKCS_PSS",
    "CKM_SHA384_RSA_PKCS_PSS",
    "CKM_SHA512_RSA_PKCS_PSS",
    "CKM_SHA3_224_RSA_PKCS_PSS",
    "CKM_SHA3_256_RSA_PKCS_PSS",
    "CKM_SHA3_384_RSA_PKCS_PSS",
    "CKM_SHA3_512_RSA_PKCS_PSS",
)

_HASHES = ("SHA224", "SHA256", "SHA384", "SHA512", "SHA3_224", "SHA3_256", "SHA3_384",
           "SHA3_512", "SHAKE128", "SHAKE256")

# ML-DSA and SLH-DSA, and their pre-hash variants that hash on the token, take the optional
# context; the pure pre-hash mechanisms (data already hashed) also name the hash.
_SIGN_CONTEXT_MECHANISMS = (
    "CKM_ML_DSA",
    *(f"CKM_HASH_ML_DSA_{h}" for h in _HASHES),
    "CKM_SLH_DSA",
    *(f"CKM_HASH_SLH_DSA_{h}" for h in _HASHES),
)

_STRUCT_LIST: list[Struct] = [
    Struct("CK_VERSION", (
        _ulong("major", "CK_BYTE"),
        _ulong("minor", "CK_BYTE"),
    )),
    # CK_INFO.flags has no bits defined by the specification (it must be zero).
    Struct("CK_INFO", (
        _version("cryptokiVersion"),
        _text("manufacturerID", 32),
        _ulong("flags", "CK_FLAGS"),
        _text("libraryDescription", 32),
        _version("libraryVersion"),
    )),
    Struct("CK_SLOT_INFO", (
        _text("slotDescription", 64),
        _text("manufacturerID", 32),
        _flags("flags", "CKF_SLOT"),
        _version("hardwareVersion"),
        _version("firmwareVersion"),
    )),
    Struct("CK_TOKEN_INFO", (
        _text("label", 32),
        _text("manufacturerID", 32),
        _text("model", 16),
        _text("serialNumber", 16, "CK_CHAR"),
        _flags("flags", "CKF_TOKEN"),
        _ulong("ulMaxSessionCount"),
        _ulong("ulSessionCount"),
        _ulong("ulMaxRwSessionCount"),
        _ulong("ulRwSessionCount"),
        _ulong("ulMaxPinLen"),
        _ulong("ulMinPinLen"),
        _ulong("ulTotalPublicMemory"),
        _ulong("ulFreePublicMemory"),
        _ulong("ulTotalPrivateMemory"),
        _ulong("ulFreePrivateMemory"),
        _version("hardwareVersion"),
        _version("firmwareVersion"),
        _text("utcTime", 16, "CK_CHAR"),
    )),
    Struct("CK_SESSION_INFO", (
        Param("slotID", "CK_SLOT_ID", Role.HANDLE, kind="slot"),
        _enum("state", "CK_STATE", "CKS"),
        _flags("flags", "CKF_SESSION"),
        _ulong("ulDeviceError"),
    )),
    Struct("CK_MECHANISM_INFO", (
        _ulong("ulMinKeySize"),
        _ulong("ulMaxKeySize"),
        _flags("flags", "CKF_MECHANISM"),
    )),
    Struct("CK_ATTRIBUTE", (
        _enum("type", "CK_ATTRIBUTE_TYPE", "CKA"),
        _bytes("pValue", "ulValueLen", "CK_VOID_PTR"),
        _len("ulValueLen"),
    )),
    Struct("CK_MECHANISM", (
        _enum("mechanism", "CK_MECHANISM_TYPE", "CKM"),
        _bytes("pParameter", "ulParameterLen", "CK_VOID_PTR"),
        _len("ulParameterLen"),
    )),
    Struct("CK_DATE", (
        _text("year", 4, "CK_CHAR"),
        _text("month", 2, "CK_CHAR"),
        _text("day", 2, "CK_CHAR"),
    )),
    Struct("CK_C_INITIALIZE_ARGS", (
        _pointer("CreateMutex", "CK_CREATEMUTEX"),
        _pointer("DestroyMutex", "CK_DESTROYMUTEX"),
        _pointer("LockMutex", "CK_LOCKMUTEX"),
        _pointer("UnlockMutex", "CK_UNLOCKMUTEX"),
        _flags("flags", "CKF_INIT_ARGS"),
        _pointer("pReserved", "CK_VOID_PTR"),
    )),
    Struct("CK_INTERFACE", (
        Param("pInterfaceName", "CK_CHAR_PTR", Role.CSTRING),
        _pointer("pFunctionList", "CK_VOID_PTR"),
        _flags("flags", "CKF_INTERFACE"),
    )),
    # After C_AsyncComplete, pValue is the caller's output buffer and ulValue the result size.
    Struct("CK_ASYNC_DATA", (
        _ulong("ulVersion"),
        _bytes("pValue", "ulValue"),
        _len("ulValue"),
        _obj("hObject"),
        _obj("hAdditionalObject"),
    )),
    # --- mechanism parameters ----------------------------------------------------------------
    Struct("CK_GCM_PARAMS", (
        _bytes("pIv", "ulIvLen"),
        _len("ulIvLen"),
        _ulong("ulIvBits"),
        _bytes("pAAD", "ulAADLen"),
        _len("ulAADLen"),
        _ulong("ulTagBits"),
    ), mechanisms=("CKM_AES_GCM",)),
    Struct("CK_CCM_PARAMS", (
        _ulong("ulDataLen"),
        _bytes("pNonce", "ulNonceLen"),
        _len("ulNonceLen"),
        _bytes("pAAD", "ulAADLen"),
        _len("ulAADLen"),
        _ulong("ulMACLen"),
    ), mechanisms=("CKM_AES_CCM",)),
    # The message parameters travel as the pParameter of C_EncryptMessage and friends (and
    # of C_WrapKeyAuthenticated's mechanism), not as CKM_AES_GCM / CKM_AES_CCM's ordinary
    # parameter, so no mechanism selects them. The token may write the IV / nonce, the tag
    # (ulTagBits bits, hence not followed) and the MAC back.
    Struct("CK_GCM_MESSAGE_PARAMS", (
        _bytes("pIv", "ulIvLen"),
        _len("ulIvLen"),
        _ulong("ulIvFixedBits"),
        _enum("ivGenerator", "CK_GENERATOR_FUNCTION", "CKG_GENERATOR"),
        _pointer("pTag", "CK_BYTE_PTR"),
        _ulong("ulTagBits"),
    )),
    Struct("CK_CCM_MESSAGE_PARAMS", (
        _ulong("ulDataLen"),
        _bytes("pNonce", "ulNonceLen"),
        _len("ulNonceLen"),
        _ulong("ulNonceFixedBits"),
        _enum("nonceGenerator", "CK_GENERATOR_FUNCTION", "CKG_GENERATOR"),
        _bytes("pMAC", "ulMACLen"),
        _len("ulMACLen"),
    )),
    Struct("CK_RSA_PKCS_OAEP_PARAMS", (
        _enum("hashAlg", "CK_MECHANISM_TYPE", "CKM"),
        _enum("mgf", "CK_RSA_PKCS_MGF_TYPE", "CKG_MGF"),
        _enum("source", "CK_RSA_PKCS_OAEP_SOURCE_TYPE", "CKZ_DATA"),
        _bytes("pSourceData", "ulSourceDataLen", "CK_VOID_PTR"),
        _len("ulSourceDataLen"),
    ), mechanisms=("CKM_RSA_PKCS_OAEP",)),
    Struct("CK_RSA_PKCS_PSS_PARAMS", (
        _enum("hashAlg", "CK_MECHANISM_TYPE", "CKM"),
        _enum("mgf", "CK_RSA_PKCS_MGF_TYPE", "CKG_MGF"),
        _ulong("sLen"),
    ), mechanisms=_PSS_MECHANISMS),
    Struct("CK_ECDH1_DERIVE_PARAMS", (
        _enum("kdf", "CK_EC_KDF_TYPE", "CKD"),
        _len("ulSharedDataLen"),
        _bytes("pSharedData", "ulSharedDataLen"),
        _len("ulPublicDataLen"),
        _bytes("pPublicData", "ulPublicDataLen"),
    ), mechanisms=("CKM_ECDH1_DERIVE", "CKM_ECDH1_COFACTOR_DERIVE")),
    Struct("CK_AES_CTR_PARAMS", (
        _ulong("ulCounterBits"),
        _fixed_bytes("cb", 16),
    ), mechanisms=("CKM_AES_CTR",)),
    Struct("CK_AES_CBC_ENCRYPT_DATA_PARAMS", (
        _fixed_bytes("iv", 16),
        _bytes("pData", "length"),
        _len("length"),
    ), mechanisms=("CKM_AES_CBC_ENCRYPT_DATA",)),
    Struct("CK_PKCS5_PBKD2_PARAMS2", (
        _enum("saltSource", "CK_PKCS5_PBKDF2_SALT_SOURCE_TYPE", "CKZ_SALT"),
        _bytes("pSaltSourceData", "ulSaltSourceDataLen", "CK_VOID_PTR"),
        _len("ulSaltSourceDataLen"),
        _ulong("iterations"),
        _enum("prf", "CK_PKCS5_PBKD2_PSEUDO_RANDOM_FUNCTION_TYPE", "CKP_PBKDF2_PRF"),
        _bytes("pPrfData", "ulPrfDataLen", "CK_VOID_PTR"),
        _len("ulPrfDataLen"),
        Param("pPassword", "CK_UTF8CHAR_PTR", Role.PIN, length="ulPasswordLen"),
        _len("ulPasswordLen"),
    ), mechanisms=("CKM_PKCS5_PBKD2",)),
    # The original layout, whose password length is a pointer. It has the size of
    # CK_PKCS5_PBKD2_PARAMS2 on LP64, so the two cannot be told apart by ulParameterLen;
    # CKM_PKCS5_PBKD2 is therefore read as the current PARAMS2 and this one is not selected.
    Struct("CK_PKCS5_PBKD2_PARAMS", (
        _enum("saltSource", "CK_PKCS5_PBKDF2_SALT_SOURCE_TYPE", "CKZ_SALT"),
        _bytes("pSaltSourceData", "ulSaltSourceDataLen", "CK_VOID_PTR"),
        _len("ulSaltSourceDataLen"),
        _ulong("iterations"),
        _enum("prf", "CK_PKCS5_PBKD2_PSEUDO_RANDOM_FUNCTION_TYPE", "CKP_PBKDF2_PRF"),
        _bytes("pPrfData", "ulPrfDataLen", "CK_VOID_PTR"),
        _len("ulPrfDataLen"),
        Param("pPassword", "CK_UTF8CHAR_PTR", Role.PIN, length="ulPasswordLen"),
        Param("ulPasswordLen", "CK_ULONG_PTR", Role.LENGTH_PTR),
    )),
    Struct("CK_KEY_DERIVATION_STRING_DATA", (
        _bytes("pData", "ulLen"),
        _len("ulLen"),
    ), mechanisms=(
        "CKM_CONCATENATE_BASE_AND_DATA",
        "CKM_CONCATENATE_DATA_AND_BASE",
        "CKM_XOR_BASE_AND_DATA",
        "CKM_DES_ECB_ENCRYPT_DATA",
        "CKM_DES3_ECB_ENCRYPT_DATA",
        "CKM_AES_ECB_ENCRYPT_DATA",
        "CKM_CAMELLIA_ECB_ENCRYPT_DATA",
        "CKM_ARIA_ECB_ENCRYPT_DATA",
        "CKM_SEED_ECB_ENCRYPT_DATA",
    )),
    # ulSaltType holds exactly one CKF_HKDF_SALT_* value.
    Struct("CK_HKDF_PARAMS", (
        Param("bExtract", "CK_BBOOL", Role.BOOL),
        Param("bExpand", "CK_BBOOL", Role.BOOL),
        _enum("prfHashMechanism", "CK_MECHANISM_TYPE", "CKM"),
        _flags("ulSaltType", "CKF_HKDF", "CK_ULONG"),
        _bytes("pSalt", "ulSaltLen"),
        _len("ulSaltLen"),
        _obj("hSaltKey"),
        _bytes("pInfo", "ulInfoLen"),
        _len("ulInfoLen"),
    ), mechanisms=("CKM_HKDF_DERIVE", "CKM_HKDF_DATA")),
    Struct("CK_SIGN_ADDITIONAL_CONTEXT", (
        _enum("hedgeVariant", "CK_HEDGE_TYPE", "CKH_HEDGE"),
        _bytes("pContext", "ulContextLen"),
        _len("ulContextLen"),
    ), mechanisms=_SIGN_CONTEXT_MECHANISMS),
    Struct("CK_HASH_SIGN_ADDITIONAL_CONTEXT", (
        _enum("hedgeVariant", "CK_HEDGE_TYPE", "CKH_HEDGE"),
        _bytes("pContext", "ulContextLen"),
        _len("ulContextLen"),
        _enum("hash", "CK_MECHANISM_TYPE", "CKM"),
    ), mechanisms=("CKM_HASH_ML_DSA", "CKM_HASH_SLH_DSA")),
]

STRUCTS: dict[str, Struct] = {s.name: s for s in _STRUCT_LIST}


def _check() -> None:
    """Raise ValueError on a description the shim or the decoder could not follow."""
    owner: dict[str, str] = {}
    for s in _STRUCT_LIST:
        fields = {f.name: f for f in s.fields}
        if len(fields) != len(s.fields):
            raise ValueError(f"{s.name}: duplicate field names")
        uses: dict[str, int] = {}
        for f in s.fields:
            if f.length is None:
                continue
            target = fields.get(f.length)
            if target is None or target.role not in (Role.LENGTH, Role.LENGTH_PTR):
                raise ValueError(f"{s.name}.{f.name}: {f.length} is not a length field")
            uses[f.length] = uses.get(f.length, 0) + 1
        for f in s.fields:
            if f.role in (Role.LENGTH, Role.LENGTH_PTR) and uses.get(f.name, 0) != 1:
                raise ValueError(f"{s.name}.{f.name}: a length nobody refers to once")
            if f.role is Role.STRUCT_IN and f.struct not in STRUCTS:
                raise ValueError(f"{s.name}.{f.name}: unknown struct {f.struct}")
        for m in s.mechanisms:
            if m in owner:
                raise ValueError(f"{m} takes both {owner[m]} and {s.name}")
            owner[m] = s.name


_check()

# The struct each mechanism takes as its parameter, by mechanism name.
MECHANISM_STRUCTS: dict[str, str] = {m: s.name for s in _STRUCT_LIST for m in s.mechanisms}


@cache
def _by_value() -> dict[int, str]:
    from .constants import FAMILIES

    ckm = FAMILIES["CKM"]
    return {ckm.value_of(m): s for m, s in MECHANISM_STRUCTS.items()}


def struct_for_mechanism(mechanism: int) -> str | None:
    """The name of the struct a mechanism (by value) takes as pParameter, if we describe it."""
    return _by_value().get(mechanism)


@cache
def ffi_for_layout() -> cffi.FFI:
    """A cffi FFI (ABI mode, no compiler) with CDEF loaded, for reading captured struct bytes
    with ffi.from_buffer; made once. The build writes it ahead (_layout.py, by
    shim_build/prebuilt.py), so that reading a trace needs no C parser at start-up (a third of
    the start-up of `decode --json`); where that module is missing or was made from another
    CDEF, CDEF is parsed here."""
    import hashlib

    try:
        from . import _layout  # type: ignore[attr-defined]

        if _layout.SOURCE == hashlib.sha256(CDEF.encode()).hexdigest():
            return _layout.ffi
    except ImportError:
        pass
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    return ffi
