/* nouname LIB: uname(2) made to fail (a seccomp filter answers it EPERM, as a sandbox may),
 * then dlopen LIB, C_GetFunctionList, C_Initialize, C_GetInfo, C_GetSlotList, C_Finalize,
 * printing each return value: the same lines through the shim as from the module itself. */
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

static int deny_uname(void)
{
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_uname, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof code / sizeof code[0], code};
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    struct utsname u;
    if (!deny_uname() || uname(&u) == 0) {
        printf("could not make uname fail\n");
        return 3;
    }
    printf("uname fails: errno %d\n", errno);
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("dlopen: %s\n", dlerror());
        return 1;
    }
    CK_FUNCTION_LIST_PTR f;
    CK_INFO info;
    CK_ULONG n = 0;
    printf("C_GetFunctionList %lu\n", ((CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList"))(&f));
    printf("C_Initialize %lu\n", f->C_Initialize(NULL));
    printf("C_GetInfo %lu %.32s\n", f->C_GetInfo(&info), (const char *)info.manufacturerID);
    printf("C_GetSlotList %lu %lu\n", f->C_GetSlotList(CK_FALSE, NULL, &n), n);
    printf("C_Finalize %lu\n", f->C_Finalize(NULL));
    return 0;
}
