/* The little of PKCS#11 these programs use, so they build without any PKCS#11 header. */
typedef unsigned long U;
typedef struct { unsigned char major, minor; } V;
typedef U (*fp)();
typedef struct { V version; fp f[68]; } FL;   /* C_Initialize 0, C_Finalize 1, C_GetInfo 2 */
typedef struct { V cryptoki; char manufacturer[32]; U flags; char desc[32]; V lib; } INFO;
