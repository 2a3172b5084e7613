/* A daemon's habit: clear the environment, then load a PKCS#11 module.
 * usage: clearenv MODULE SOFTHSM2_CONF
 * Clears its environment (clearenv), puts back only SOFTHSM2_CONF, then dlopens MODULE and
 * calls C_Initialize, C_GetInfo and C_Finalize; prints the module's manufacturer. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "p11min.h"

int main(int argc, char **argv)
{
    if (argc != 3) return 2;
    clearenv();
    setenv("SOFTHSM2_CONF", argv[2], 1);
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) return 1;
    U (*get)(FL **) = (U (*)(FL **))dlsym(h, "C_GetFunctionList");
    FL *f = NULL;
    if (!get || get(&f) != 0) return 1;
    INFO info;
    U rv = f->f[0](NULL);
    if (rv == 0) rv = f->f[2](&info);
    f->f[1](NULL);
    if (rv != 0) return 1;
    printf("%.32s\n", info.manufacturer);
    return 0;
}
