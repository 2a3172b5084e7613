/* reload LIB REAL N: N rounds of dlopen, C_GetFunctionList, C_Initialize, C_GetInfo,
 * C_Finalize, dlclose, as a plug-in host does; prints open descriptors before and after, the
 * failures, and whether the real module REAL is still loaded afterwards. */
#include <p11-kit/pkcs11.h>
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static int nfds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 4) return 2;
    int rounds = atoi(argv[3]), fails = 0, before = nfds();
    for (int i = 0; i < rounds; i++) {
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            printf("round %d: dlopen: %s\n", i, dlerror());
            return 1;
        }
        CK_FUNCTION_LIST_PTR f;
        CK_INFO info;
        if (((CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList"))(&f) != CKR_OK ||
            f->C_Initialize(NULL) != CKR_OK || f->C_GetInfo(&info) != CKR_OK ||
            f->C_Finalize(NULL) != CKR_OK)
            fails++;
        dlclose(h);
    }
    printf("fds before %d after %d\n", before, nfds());
    printf("failures %d\n", fails);
    printf("real module still loaded: %s\n",
           dlopen(argv[2], RTLD_NOW | RTLD_NOLOAD) ? "yes" : "no");
    return 0;
}
