/* fdreuse MODULE OUTFILE [REMOVE]: the client closes every descriptor above 2 (closefrom(3),
 * as daemons and forked workers do), opens a file of its own, and goes on using PKCS#11. With
 * REMOVE, it first deletes that file (the trace, as log rotation would). */
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) return 2;
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) return 1;
    CK_FUNCTION_LIST_PTR f;
    if (((CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList"))(&f) != CKR_OK) return 1;
    printf("C_Initialize 0x%lx\n", f->C_Initialize(NULL));
    if (argc == 4) unlink(argv[3]);
    for (int fd = 3; fd < 1024; fd++) close(fd);
    int mine = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    printf("own file fd %d\n", mine);
    const char one[] = "client line 1\n", two[] = "client line 2\n";
    if (write(mine, one, sizeof one - 1) < 0) return 1;
    CK_INFO info;
    printf("C_GetInfo 0x%lx\n", f->C_GetInfo(&info));
    CK_SLOT_ID slots[8];
    CK_ULONG n = 8;
    printf("C_GetSlotList 0x%lx\n", f->C_GetSlotList(CK_TRUE, slots, &n));
    if (write(mine, two, sizeof two - 1) < 0) return 1;
    printf("C_Finalize 0x%lx\n", f->C_Finalize(NULL));
    close(mine);
    return 0;
}
