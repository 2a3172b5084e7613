/* inside MODULE PIN MODE: a client that does not come back from a call into the module.
 *   keypair BITS  logs in and generates an RSA key pair of BITS bits (8192: seconds, time
 *                 enough to be killed or stopped inside it), then finalizes;
 *   crash         a second thread opens a session and calls C_GenerateRandom with an output
 *                 pointer that points nowhere: the module dies of SIGSEGV writing to it.
 * Before the call it prints "inside <tid>" (the thread that makes it), flushed. */
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static CK_FUNCTION_LIST_PTR f;
static CK_SLOT_ID slot;

static void say_inside(void)
{
    printf("inside %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
}

static void *crash(void *arg)
{
    CK_SESSION_HANDLE s;
    if (f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK) exit(1);
    say_inside();
    f->C_GenerateRandom(s, (CK_BYTE_PTR)(uintptr_t)16, 32); /* writes to address 16 */
    return arg;
}

int main(int argc, char **argv)
{
    if (argc < 4) return 2;
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) return 1;
    if (((CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList"))(&f) != CKR_OK) return 1;
    if (f->C_Initialize(NULL) != CKR_OK) return 1;
    CK_SLOT_ID slots[8];
    CK_ULONG n = 8;
    if (f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK || n < 1) return 1;
    slot = slots[0];
    if (strcmp(argv[3], "crash") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, crash, NULL);
        pthread_join(t, NULL);
        return 0;
    }
    if (strcmp(argv[3], "keypair") != 0 || argc != 5) return 2;
    CK_SESSION_HANDLE s;
    if (f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK)
        return 1;
    if (f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)argv[2], strlen(argv[2])) != CKR_OK) return 1;
    CK_MECHANISM mech = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_ULONG bits = strtoul(argv[4], NULL, 10);
    CK_BYTE exponent[] = {1, 0, 1};
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE pub[] = {{CKA_MODULUS_BITS, &bits, sizeof bits},
                          {CKA_PUBLIC_EXPONENT, exponent, sizeof exponent},
                          {CKA_VERIFY, &yes, sizeof yes}};
    CK_ATTRIBUTE priv[] = {{CKA_SIGN, &yes, sizeof yes}, {CKA_SENSITIVE, &yes, sizeof yes}};
    CK_OBJECT_HANDLE hpub, hpriv;
    say_inside();
    CK_RV rv = f->C_GenerateKeyPair(s, &mech, pub, 3, priv, 2, &hpub, &hpriv);
    printf("C_GenerateKeyPair 0x%lx\n", rv);
    f->C_Logout(s);
    f->C_Finalize(NULL);
    return rv == CKR_OK ? 0 : 1;
}
