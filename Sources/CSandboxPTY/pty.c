#include "CSandboxPTY.h"

#include <errno.h>
#include <grp.h>
#include <pty.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

int deckhand_spawn_pty(const char *path, char *const argv[], char *const envp[], const char *cwd,
                       unsigned short rows, unsigned short cols, int uid, int gid, int plain, int *master,
                       pid_t *pid) {
    struct winsize size;
    memset(&size, 0, sizeof size);
    size.ws_row = rows;
    size.ws_col = cols;
    int fd = -1;
    pid_t child = forkpty(&fd, NULL, NULL, &size);
    if (child < 0) {
        return -errno;
    }
    if (child == 0) {
        struct sigaction deflt;
        memset(&deflt, 0, sizeof deflt);
        deflt.sa_handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; sig++) {
            sigaction(sig, &deflt, NULL);
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (plain) {
            struct termios mode;
            if (tcgetattr(STDIN_FILENO, &mode) == 0) {
                mode.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL | ECHOCTL);
                mode.c_oflag &= ~(tcflag_t)ONLCR;
                tcsetattr(STDIN_FILENO, TCSANOW, &mode);
            }
        }
        if (uid >= 0) {
            if (setgroups(0, NULL) != 0 || setgid((gid_t)gid) != 0 || setuid((uid_t)uid) != 0) {
                _exit(126);
            }
        }
        if (cwd != NULL && chdir(cwd) != 0) {
            _exit(125);
        }
        execve(path, argv, envp);
        _exit(127);
    }
    *master = fd;
    *pid = child;
    return 0;
}

int deckhand_file_status(const char *path, int follow, unsigned int *mode, long long *modified) {
    struct stat info;
    int result = follow ? stat(path, &info) : lstat(path, &info);
    if (result != 0) {
        return -errno;
    }
    *mode = (unsigned int)info.st_mode;
    *modified = (long long)info.st_mtim.tv_sec;
    return 0;
}

int deckhand_make_undumpable(void) {
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : -errno;
}

int deckhand_limit_processes(unsigned long limit) {
    struct rlimit bounds = {.rlim_cur = limit, .rlim_max = limit};
    return setrlimit(RLIMIT_NPROC, &bounds) == 0 ? 0 : -errno;
}
