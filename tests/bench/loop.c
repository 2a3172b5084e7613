/* Calls one PKCS#11 function in a tight loop, from 1 or more threads; prints calls per second.
 * usage: loop MODULE PIN getsessioninfo|random32 CALLS THREADS
 * Written against the module's C_GetFunctionList only, as the simplest C client would be. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef unsigned long U;
typedef struct { unsigned char major, minor; } V;
typedef struct { U slotID, state, flags, ulDeviceError; } SINFO;
typedef U (*fp)();
typedef struct { V version; fp f[68]; } FL;
/* Slots in CK_FUNCTION_LIST: C_Initialize 0, C_GetSlotList 4, C_OpenSession 12,
 * C_GetSessionInfo 15, C_Login 18, C_GenerateRandom 64. */
enum { INIT = 0, SLOTS = 4, OPEN = 12, SESSINFO = 15, LOGIN = 18, RANDOM = 64 };

static FL *fl;
static long calls;
static int use_random;

static void *worker(void *arg)
{
    U s = 0;
    U slots[16], n = 16;
    fl->f[SLOTS](1, slots, &n);
    U orv = fl->f[OPEN](slots[0], 6UL, NULL, NULL, &s); if (orv) { fprintf(stderr, "open failed: %lu\n", orv); exit(1); }
    SINFO si;
    unsigned char buf[32];
    for (long i = 0; i < calls; i++) {
        U rv = use_random ? fl->f[RANDOM](s, buf, 32UL) : fl->f[SESSINFO](s, &si);
        if (rv) { fprintf(stderr, "call failed: %lu\n", rv); exit(1); }
    }
    return arg;
}

int main(int argc, char **argv)
{
    if (argc != 6) { fprintf(stderr, "usage: loop MODULE PIN FUNC CALLS THREADS\n"); return 2; }
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    U (*gfl)(FL **) = (U (*)(FL **))dlsym(h, "C_GetFunctionList");
    if (gfl(&fl)) return 1;
    /* CKF_OS_LOCKING_OK: the threads share the module, which must then lock. */
    struct { void *create, *destroy, *lock, *unlock; U flags; void *reserved; } init =
        {NULL, NULL, NULL, NULL, 2UL, NULL};
    if (fl->f[INIT](&init)) return 1;
    use_random = strcmp(argv[3], "random32") == 0;
    calls = atol(argv[4]);
    int threads = atoi(argv[5]);
    U slots[16], n = 16, s;
    fl->f[SLOTS](1, slots, &n);
    fl->f[OPEN](slots[0], 6UL, NULL, NULL, &s);
    fl->f[LOGIN](s, 1UL, argv[2], (U)strlen(argv[2]));
    pthread_t t[64];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double secs = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    printf("%.1f\n", calls * threads / secs);
    return 0;
}
