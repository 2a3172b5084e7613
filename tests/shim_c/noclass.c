/* noclass MODULE PIN: key values in templates that do not name the object's class: an AES key
 * made with CKA_KEY_TYPE and CKA_VALUE only, and a search for an object by its CKA_VALUE. The
 * values are the strings printed. */
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    CK_FUNCTION_LIST_PTR f;
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
    f->C_Finalize(NULL);
    return 0;
}
