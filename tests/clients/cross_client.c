/*
 * A small PKCS#11 client in C, built for every architecture the shim is (testbed/cross.py), so
 * a trace made on s390x or aarch64 under qemu-user can be compared call by call with one made
 * here. It sets up a fresh SoftHSM2 token, then logs in (once wrongly), reads and writes
 * objects, digests and encrypts with fixed inputs, so that every value but the handles and the
 * random bytes is the same on every machine. It prints one line per call.
 *
 * Usage: cross_client MODULE   (p11_cdef.h: facts/pkcs11/cdecl.py function_list_cdef())
 */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "p11_cdef.h"

#define CKF_RW_SESSION 0x2UL
#define CKF_SERIAL_SESSION 0x4UL
#define CKU_SO 0UL
#define CKU_USER 1UL
#define CKO_DATA 0x0UL
#define CKO_SECRET_KEY 0x4UL
#define CKK_AES 0x1fUL
#define CKA_CLASS 0x0UL
#define CKA_TOKEN 0x1UL
#define CKA_LABEL 0x3UL
#define CKA_VALUE 0x11UL
#define CKA_KEY_TYPE 0x100UL
#define CKA_ENCRYPT 0x104UL
#define CKA_VALUE_LEN 0x161UL
#define CKM_SHA256 0x250UL
#define CKM_AES_GCM 0x1087UL
#define CKF_TOKEN_INITIALIZED 0x400UL

static P11_FUNCTION_LIST_3_2 *f;
static int failures;

static CK_RV check(const char *what, CK_RV rv, CK_RV want)
{
    printf("%s rv=0x%lx\n", what, rv);
    if (rv != want) {
        printf("  expected 0x%lx\n", want);
        failures++;
    }
    return rv;
}

static void hex(const char *what, const unsigned char *p, CK_ULONG n)
{
    printf("  %s", what);
    for (CK_ULONG i = 0; i < n; i++) printf("%02x", p[i]);
    printf("\n");
}

static CK_SLOT_ID find_token(const char *label)
{
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    check("C_GetSlotList(present)", f->C_GetSlotList(1, slots, &n), 0);
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (f->C_GetTokenInfo(slots[i], &ti) != 0) continue;
        if ((ti.flags & CKF_TOKEN_INITIALIZED) && memcmp(ti.label, label, strlen(label)) == 0) {
            printf("  token %.32s flags 0x%lx\n", ti.label, ti.flags);
            return slots[i];
        }
    }
    failures++;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: cross_client MODULE\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
        return 2;
    }
    CK_RV (*gfl)(void **) = (CK_RV(*)(void **))dlsym(lib, "C_GetFunctionList");
    if (!gfl || check("C_GetFunctionList", gfl((void **)&f), 0) != 0) return 1;

    check("C_Initialize", f->C_Initialize(NULL), 0);
    check("C_Initialize again", f->C_Initialize(NULL), 0x191); /* ALREADY_INITIALIZED */
    CK_INFO info;
    check("C_GetInfo", f->C_GetInfo(&info), 0);
    printf("  cryptoki %u.%u, %.32s\n", info.cryptokiVersion.major, info.cryptokiVersion.minor,
           info.manufacturerID);

    CK_ULONG nslots = 0;
    check("C_GetSlotList(count)", f->C_GetSlotList(0, NULL, &nslots), 0);
    CK_SLOT_ID slots[16];
    CK_ULONG room = 16;
    check("C_GetSlotList", f->C_GetSlotList(0, slots, &room), 0);
    CK_SLOT_INFO si;
    check("C_GetSlotInfo", f->C_GetSlotInfo(slots[0], &si), 0);
    printf("  slot flags 0x%lx\n", si.flags);

    CK_UTF8CHAR label[32];
    memset(label, ' ', sizeof label);
    memcpy(label, "cross", 5);
    check("C_InitToken", f->C_InitToken(slots[0], (CK_UTF8CHAR *)"5678", 4, label), 0);
    CK_SLOT_ID slot = find_token("cross");

    CK_SESSION_HANDLE s = 0;
    check("C_OpenSession", f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                                            &s), 0);
    check("C_Login(SO)", f->C_Login(s, CKU_SO, (CK_UTF8CHAR *)"5678", 4), 0);
    check("C_InitPIN", f->C_InitPIN(s, (CK_UTF8CHAR *)"1234", 4), 0);
    check("C_Logout(SO)", f->C_Logout(s), 0);
    check("C_Login(wrong PIN)", f->C_Login(s, CKU_USER, (CK_UTF8CHAR *)"0000", 4), 0xa0);
    check("C_Login", f->C_Login(s, CKU_USER, (CK_UTF8CHAR *)"1234", 4), 0);
    CK_SESSION_INFO sinfo;
    check("C_GetSessionInfo", f->C_GetSessionInfo(s, &sinfo), 0);
    printf("  state %lu flags 0x%lx\n", sinfo.state, sinfo.flags);

    unsigned char rnd[16];
    check("C_GenerateRandom", f->C_GenerateRandom(s, rnd, sizeof rnd), 0);

    CK_OBJECT_CLASS data_class = CKO_DATA;
    CK_BBOOL no = 0, yes = 1;
    char data_label[] = "cross-data";
    char value[] = "the same bytes on every machine";
    CK_ATTRIBUTE data[] = {
        {CKA_CLASS, &data_class, sizeof data_class},
        {CKA_TOKEN, &no, sizeof no},
        {CKA_LABEL, data_label, sizeof data_label - 1},
        {CKA_VALUE, value, sizeof value - 1},
    };
    CK_OBJECT_HANDLE obj = 0;
    check("C_CreateObject(data)", f->C_CreateObject(s, data, 4, &obj), 0);

    CK_ATTRIBUTE find[] = {{CKA_CLASS, &data_class, sizeof data_class}};
    check("C_FindObjectsInit", f->C_FindObjectsInit(s, find, 1), 0);
    CK_OBJECT_HANDLE found[4];
    CK_ULONG nfound = 0;
    check("C_FindObjects", f->C_FindObjects(s, found, 4, &nfound), 0);
    printf("  found %lu\n", nfound);
    check("C_FindObjectsFinal", f->C_FindObjectsFinal(s), 0);

    CK_ATTRIBUTE ask[] = {{CKA_LABEL, NULL, 0}, {CKA_VALUE, NULL, 0}, {CKA_CLASS, NULL, 0}};
    check("C_GetAttributeValue(lengths)", f->C_GetAttributeValue(s, obj, ask, 3), 0);
    printf("  lengths %lu %lu %lu\n", ask[0].ulValueLen, ask[1].ulValueLen, ask[2].ulValueLen);
    char got_label[64], got_value[64];
    CK_OBJECT_CLASS got_class = 99;
    ask[0].pValue = got_label;
    ask[1].pValue = got_value;
    ask[2].pValue = &got_class;
    check("C_GetAttributeValue", f->C_GetAttributeValue(s, obj, ask, 3), 0);
    printf("  class %lu label %.*s\n", got_class, (int)ask[0].ulValueLen, got_label);

    CK_MECHANISM sha = {CKM_SHA256, NULL, 0};
    check("C_DigestInit", f->C_DigestInit(s, &sha), 0);
    unsigned char digest[32];
    CK_ULONG dlen = sizeof digest;
    check("C_Digest", f->C_Digest(s, (CK_BYTE *)"abc", 3, digest, &dlen), 0);
    hex("sha256 ", digest, dlen);

    CK_OBJECT_CLASS key_class = CKO_SECRET_KEY;
    CK_KEY_TYPE key_type = CKK_AES;
    unsigned char key[16] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                             0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f};
    CK_ATTRIBUTE aes[] = {
        {CKA_CLASS, &key_class, sizeof key_class}, {CKA_KEY_TYPE, &key_type, sizeof key_type},
        {CKA_TOKEN, &no, sizeof no}, {CKA_ENCRYPT, &yes, sizeof yes},
        {CKA_VALUE, key, sizeof key},
    };
    CK_OBJECT_HANDLE hkey = 0;
    check("C_CreateObject(AES key)", f->C_CreateObject(s, aes, 5, &hkey), 0);
    CK_ULONG key_len = 0;
    CK_ATTRIBUTE ask_len = {CKA_VALUE_LEN, &key_len, sizeof key_len};
    check("C_GetAttributeValue(CKA_VALUE_LEN)", f->C_GetAttributeValue(s, hkey, &ask_len, 1), 0);
    printf("  key length %lu\n", key_len);

    unsigned char iv[12] = "twelve bytes", aad[4] = "head";
    CK_GCM_PARAMS gcm;
    memset(&gcm, 0, sizeof gcm);
    gcm.pIv = iv;
    gcm.ulIvLen = sizeof iv;
    gcm.ulIvBits = 96;
    gcm.pAAD = aad;
    gcm.ulAADLen = sizeof aad;
    gcm.ulTagBits = 128;
    CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof gcm};
    check("C_EncryptInit(AES-GCM)", f->C_EncryptInit(s, &mech, hkey), 0);
    unsigned char ct[64];
    CK_ULONG ctlen = 0;
    check("C_Encrypt(length)", f->C_Encrypt(s, (CK_BYTE *)"plain text", 10, NULL, &ctlen), 0);
    printf("  needs %lu\n", ctlen);
    ctlen = sizeof ct;
    check("C_Encrypt", f->C_Encrypt(s, (CK_BYTE *)"plain text", 10, ct, &ctlen), 0);
    hex("ciphertext ", ct, ctlen);

    check("C_Logout", f->C_Logout(s), 0);
    check("C_CloseSession", f->C_CloseSession(s), 0);
    check("C_CloseSession(closed)", f->C_CloseSession(s), 0xb3); /* SESSION_HANDLE_INVALID */
    check("C_Finalize", f->C_Finalize(NULL), 0);
    printf("%d unexpected\n", failures);
    return failures ? 1 : 0;
}
