/* classes MODULE PIN: C_CreateObject with a CKA_VALUE under an OTP-key class, a
 * vendor-defined class and a class no version of PKCS#11 defines (each refused or accepted
 * by the module; the template is recorded either way), and a data object as the control
 * whose value is no secret. The values are the strings printed. */
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>
#include <stdio.h>
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

int main(int argc, char **argv)
{
    if (argc != 3) return 2;
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
    create(s, CKO_OTP_KEY, "otp-key-secret-8c1f07");
    create(s, CKO_VENDOR_DEFINED | 0x4b4559UL, "vendor-secret-5d93a2");
    create(s, 0x7777UL, "unknown-class-secret-e4b6");
    create(s, CKO_DATA, "plain-data-value-0a11");
    f->C_Finalize(NULL);
    return 0;
}
