/* classes MODULE PIN [noclass]: C_CreateObject with a CKA_VALUE under an OTP-key class, a
 * vendor-defined class and a class no version of PKCS#11 defines (each refused or accepted
 * by the module; the template is recorded either way), and a data object as the control
 * whose value is no secret. With noclass instead: key values in templates that name no
 * class, an AES key made with CKA_KEY_TYPE and CKA_VALUE only and a search for an object by
 * its CKA_VALUE. The values are the strings printed. With table instead: for each line of
 * standard input "CLASS ATTR SENSITIVE" (hex; CLASS "-" for a template that names no class),
 * a C_CreateObject of {CKA_CLASS=CLASS,} {CKA_SENSITIVE=TRUE,} CKA_TOKEN=FALSE, ATTR=16 bytes
 * "agree-value-0123"; the module refuses most, the template is recorded either way. It
 * prints the number of calls. */
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static CK_FUNCTION_LIST_PTR f;

static void create(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const char *value)
{
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls},
                        {CKA_TOKEN, &no, sizeof no},
                        {CKA_VALUE, (void *)value, strlen(value)}};
    CK_OBJECT_HANDLE h = 0;
    printf("C_CreateObject class 0x%lx 0x%lx %s\n", cls, f->C_CreateObject(s, t, 3, &h), value);
}

static void noclass(CK_SESSION_HANDLE s)
{
    const char *made = "aes-noclass-secret-71c4d2";  /* 25 bytes: SoftHSM may refuse; recorded */
    CK_KEY_TYPE aes = CKK_AES;
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE t[] = {{CKA_KEY_TYPE, &aes, sizeof aes}, {CKA_TOKEN, &no, sizeof no},
                        {CKA_VALUE, (void *)made, strlen(made)}};
    CK_OBJECT_HANDLE o = 0;
    printf("C_CreateObject 0x%lx %s\n", f->C_CreateObject(s, t, 3, &o), made);
    const char *sought = "search-by-value-secret-3e90";
    CK_ATTRIBUTE q[] = {{CKA_VALUE, (void *)sought, strlen(sought)}};
    printf("C_FindObjectsInit 0x%lx %s\n", f->C_FindObjectsInit(s, q, 1), sought);
    f->C_FindObjectsFinal(s);
}

static void table(CK_SESSION_HANDLE s)
{
    char cls_s[32];
    unsigned long attr, sens;
    unsigned calls = 0;
    static char value[] = "agree-value-0123";
    while (scanf("%31s %lx %lx", cls_s, &attr, &sens) == 3) {
        CK_OBJECT_CLASS cls = strtoul(cls_s, NULL, 16);
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        CK_ATTRIBUTE t[4];
        CK_ULONG k = 0;
        if (strcmp(cls_s, "-") != 0) t[k++] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof cls};
        if (sens) t[k++] = (CK_ATTRIBUTE){CKA_SENSITIVE, &yes, sizeof yes};
        t[k++] = (CK_ATTRIBUTE){CKA_TOKEN, &no, sizeof no};
        t[k++] = (CK_ATTRIBUTE){attr, value, sizeof value - 1};
        CK_OBJECT_HANDLE o = 0;
        if (f->C_CreateObject(s, t, k, &o) == CKR_OK) f->C_DestroyObject(s, o);
        calls++;
    }
    printf("%u calls\n", calls);
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) return 2;
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h || ((CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList"))(&f) != CKR_OK) return 1;
    f->C_Initialize(NULL);
    CK_SLOT_ID slots[8];
    CK_ULONG n = 8;
    CK_SESSION_HANDLE s;
    if (f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK || n == 0 ||
        f->C_OpenSession(slots[0], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK)
        return 1;
    f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)argv[2], strlen(argv[2]));
    if (argc == 4 && strcmp(argv[3], "noclass") == 0) {
        noclass(s);
    } else if (argc == 4 && strcmp(argv[3], "table") == 0) {
        table(s);
    } else {
        create(s, CKO_OTP_KEY, "otp-key-secret-8c1f07");
        create(s, CKO_VENDOR_DEFINED | 0x4b4559UL, "vendor-secret-5d93a2");
        create(s, 0x7777UL, "unknown-class-secret-e4b6");
        create(s, CKO_DATA, "plain-data-value-0a11");
    }
    f->C_Finalize(NULL);
    return 0;
}
