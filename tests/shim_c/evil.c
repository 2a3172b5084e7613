/* The attacker's "module": its constructor leaves a mark, so a test sees whether it was ever
 * loaded. Build with -DMARK='"path"'. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((constructor)) static void evil(void)
{
    int fd = open(MARK, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dprintf(fd, "evil.so ran with ruid=%d euid=%d\n", (int)getuid(), (int)geteuid());
        close(fd);
    }
}

unsigned long C_GetFunctionList(void **pp) { return 0x5UL; }
