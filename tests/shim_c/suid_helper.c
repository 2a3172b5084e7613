/* A setuid-root (or setgid-root) helper whose PKCS#11 module path is fixed at build time (as root-owned
 * configuration fixes it, e.g. a PAM module's), here the shim: C_GetFunctionList, then
 * C_Initialize, C_GetInfo, C_Finalize if that worked. Build with -DSHIM='"path"'. */
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    printf("helper: ruid=%d euid=%d rgid=%d egid=%d\n", (int)getuid(), (int)geteuid(),
           (int)getgid(), (int)getegid());
    void *h = dlopen(SHIM, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("dlopen: %s\n", dlerror());
        return 1;
    }
    CK_FUNCTION_LIST_PTR f = NULL;
    CK_RV rv = ((CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList"))(&f);
    printf("C_GetFunctionList 0x%lx\n", rv);
    if (rv != CKR_OK) return 0;
    printf("C_Initialize 0x%lx\n", f->C_Initialize(NULL));
    CK_INFO info;
    rv = f->C_GetInfo(&info);
    printf("C_GetInfo 0x%lx %.32s\n", rv, rv == CKR_OK ? (char *)info.manufacturerID : "");
    printf("C_Finalize 0x%lx\n", f->C_Finalize(NULL));
    return 0;
}
