/* fulldisk MODULE LIMIT N M: C_Initialize; then with the file size limit at LIMIT bytes
 * (SIGXFSZ ignored, so a write beyond it fails with EFBIG as on a full disk) N x C_GetInfo;
 * then with no limit M x C_GetInfo and C_Finalize. With M = 0, C_Finalize too runs under the
 * limit, which is lifted just before the program exits. Prints how many calls failed. */
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

int main(int argc, char **argv)
{
    if (argc != 5) return 2;
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    CK_FUNCTION_LIST_PTR f;
    if (!h || ((CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList"))(&f) != CKR_OK) return 1;
    if (f->C_Initialize(NULL) != CKR_OK) return 1;
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {(rlim_t)atol(argv[2]), RLIM_INFINITY};
    setrlimit(RLIMIT_FSIZE, &lim);
    int fails = 0;
    CK_INFO info;
    for (long i = 0; i < atol(argv[3]); i++) fails += f->C_GetInfo(&info) != CKR_OK;
    long m = atol(argv[4]);
    if (m == 0) fails += f->C_Finalize(NULL) != CKR_OK;
    lim.rlim_cur = RLIM_INFINITY;
    setrlimit(RLIMIT_FSIZE, &lim);
    for (long i = 0; i < m; i++) fails += f->C_GetInfo(&info) != CKR_OK;
    if (m != 0) fails += f->C_Finalize(NULL) != CKR_OK;
    printf("failures %d\n", fails);
    return 0;
}
