/*
 * The preloaded spy's side of `p11spy run`'s status file, and the exec interposers that tell
 * run which program was started without the spy. Put before preload.c by the code generator.
 */

/* ---- Reporting to `p11spy run` -------------------------------------------------------------
 * run creates a status file of its own (0600, in a folder of its own) and names it in
 * P11SPY_RUN_STATUS. Each process that loads the spy appends one-line facts to it, "PID KIND
 * TEXT": loaded (the spy is in this program), trace (the file it writes), skipped (a module
 * --module did not name), shim (a p11spy shim it left alone), env-cleared, error (a
 * complaint, which under run never goes to the client's stderr). From these run tells the user
 * what happened. Once run has ended the file is gone: a process that outlived the run (a
 * background job) or started after it stays silent and traces nothing it had not begun. */
static char g_status[PATH_MAX];
static int g_run_over;

static char g_exe[PATH_MAX];            /* this program, for the "loaded" line */
static pid_t g_status_pid;             /* the process that said "loaded" */

static void p11_status_line(int fd, pid_t pid, const char *kind, const char *text)
{
    char line[PATH_MAX + 2 * 64];
    int n = snprintf(line, sizeof line, "%d %s ", (int)pid, kind);
    for (const char *t = text; *t && n < (int)sizeof line - 1; t++)
        line[n++] = *t == '\n' ? ' ' : *t;
    line[n++] = '\n';
    ssize_t w = write(fd, line, (size_t)n); /* one write: lines of processes never mix */
    (void)w;
}

/* One fact; a forked child says "loaded" first, so run can name it. 0 if run could not be
 * told (the run is over, or the program now runs as another user). */
static int p11_status(const char *kind, const char *text)
{
    if (!g_status[0]) return 0;
    int fd = open(g_status, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) g_run_over = 1;
        return 0;
    }
    struct stat st;
    int ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid();
    if (ok) {
        pid_t me = getpid();
        if (me != g_status_pid) {
            g_status_pid = me;
            p11_status_line(fd, me, "loaded", g_exe);
        }
        if (strcmp(kind, "loaded") != 0) p11_status_line(fd, me, kind, text);
    }
    close(fd);
    return ok;
}

/* A complaint goes to run, with the hint naming -o (what to change under run); on stderr only
 * when run is there but cannot be told (a program that changed user), never once the run is
 * over (a background job must stay silent). */
static void p11_status_complaint(const char *line)
{
    static const char hint[] = "(set P11SPY_OUTPUT)";
    char out[2 * PATH_MAX + 256];
    const char *text = strncmp(line, "p11spy: ", 8) == 0 ? line + 8 : line;
    const char *at = strstr(text, hint);
    int n = at ? snprintf(out, sizeof out, "%.*s(choose another -o)%s", (int)(at - text), text,
                          at + sizeof hint - 1)
               : snprintf(out, sizeof out, "%s", text);
    if (p11_status("error", out) || g_run_over || n < 0) return;
    char err[sizeof out + 16];
    n = snprintf(err, sizeof err, "p11spy: %s\n", out);
    ssize_t w = write(2, err, n < (int)sizeof err ? (size_t)n : sizeof err - 1);
    (void)w;
}

/* A program that cleared its environment starts its own programs without the spy. */
static void p11_status_env(void)
{
    static int said;
    if (g_status[0] && !said && !getenv("P11SPY_RUN_STATUS")) {
        said = 1;
        p11_status("env-cleared", "");
    }
}

/* Programs started without the spy: a program that starts another with an environment that no
 * longer names run's status file (env -i, a daemon's clean-up) starts it untraced, and run is
 * told which. The call itself is passed on untouched. The real functions are looked up when
 * the spy is loaded, never in a vfork child. */
static int (*p11_real_execve)(const char *, char *const[], char *const[]);
static int (*p11_real_execvpe)(const char *, char *const[], char *const[]);
static int (*p11_real_fexecve)(int, char *const[], char *const[]);
static int (*p11_real_spawn[2])(pid_t *, const char *, const void *, const void *,
                                char *const[], char *const[]);
extern char **environ;

static void p11_check_exec(const char *file, char *const envp[])
{
    if (!g_status[0] || g_run_over) return;
    for (char *const *e = envp; e && *e; e++)
        if (strncmp(*e, "P11SPY_RUN_STATUS=", 18) == 0) return;
    p11_status("env-cleared", file ? file : "");
}

static int p11_exec(int (*real)(const char *, char *const[], char *const[]), const char *file,
                    char *const argv[], char *const envp[])
{
    p11_check_exec(file, envp);
    if (!real) return errno = ENOSYS, -1;
    return real(file, argv, envp);
}

P11_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    return p11_exec(p11_real_execve, path, argv, envp);
}

P11_EXPORT int execv(const char *path, char *const argv[])
{
    return execve(path, argv, environ);
}

P11_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    return p11_exec(p11_real_execvpe, file, argv, envp);
}

P11_EXPORT int execvp(const char *file, char *const argv[])
{
    return execvpe(file, argv, environ);
}

P11_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    p11_check_exec(argv[0], envp);
    if (!p11_real_fexecve) return errno = ENOSYS, -1;
    return p11_real_fexecve(fd, argv, envp);
}

static int p11_spawn(int which, pid_t *pid, const char *file, const void *actions,
                     const void *attr, char *const argv[], char *const envp[])
{
    p11_check_exec(file, envp);
    if (!p11_real_spawn[which]) return ENOSYS;
    return p11_real_spawn[which](pid, file, actions, attr, argv, envp);
}

P11_EXPORT int posix_spawn(pid_t *pid, const char *path, const void *actions, const void *attr,
                           char *const argv[], char *const envp[])
{
    return p11_spawn(0, pid, path, actions, attr, argv, envp);
}

P11_EXPORT int posix_spawnp(pid_t *pid, const char *file, const void *actions, const void *attr,
                            char *const argv[], char *const envp[])
{
    return p11_spawn(1, pid, file, actions, attr, argv, envp);
}
