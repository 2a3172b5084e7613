/* Loads two modules in turn, each where the other was unloaded (the loader tends to put the
 * second at the address the first one left).
 * usage: swap MODULE_A MODULE_B ROUNDS
 * Each round: dlopen A or B, C_GetFunctionList by dlsym, C_Initialize, C_GetInfo, C_Finalize,
 * dlclose; prints "ROUND BASE MANUFACTURER" (BASE: where the module was loaded). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>

#include "p11min.h"

int main(int argc, char **argv)
{
    if (argc != 4) return 2;
    for (int i = 0; i < atoi(argv[3]); i++) {
        void *h = dlopen(argv[1 + i % 2], RTLD_NOW | RTLD_LOCAL);
        struct link_map *lm = NULL;
        if (!h || dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0) return 1;
        U (*get)(FL **) = (U (*)(FL **))dlsym(h, "C_GetFunctionList");
        FL *f = NULL;
        if (!get || get(&f) != 0) return 1;
        INFO info;
        if (f->f[0](NULL) != 0 || f->f[2](&info) != 0) return 1;
        f->f[1](NULL);
        printf("%d %#lx %.32s\n", i, (unsigned long)lm->l_addr, info.manufacturer);
        fflush(stdout);
        dlclose(h);
    }
    return 0;
}
