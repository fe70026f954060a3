#define _GNU_SOURCE
#include "deckhand_spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void close_from(int first) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned int)first, ~0U, 0) == 0) return;
#endif
    long limit = sysconf(_SC_OPEN_MAX);
    if (limit < 0 || limit > 65536) limit = 65536;
    for (int fd = first; fd < limit; fd++) close(fd);
}

/// Moves `fd` to `target` in the child; `fd` may already be `target`.
static int place(int fd, int target) {
    if (fd == target) {
        int flags = fcntl(fd, F_GETFD);
        return flags < 0 ? -1 : fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
    }
    return dup2(fd, target) < 0 ? -1 : 0;
}

int deckhand_spawn_process(const char *path, char *const argv[], char *const envp[], int stdin_fd, int stdout_fd,
                           int stderr_fd, int lifeline_fd, pid_t *pid) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -errno;

    pid_t child = fork();
    if (child < 0) {
        int error = errno;
        close(report[0]);
        close(report[1]);
        return -error;
    }
    if (child == 0) {
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        for (int signal_number = 1; signal_number < NSIG; signal_number++) signal(signal_number, SIG_DFL);
        setsid();

        // Lift every source descriptor above the targets first, so placing one cannot clobber another.
        int sources[4] = {stdin_fd, stdout_fd, stderr_fd, lifeline_fd};
        for (int i = 0; i < 4; i++) {
            if (sources[i] >= 0 && sources[i] <= 3) {
                int lifted = fcntl(sources[i], F_DUPFD_CLOEXEC, 10);
                if (lifted < 0) goto failed;
                sources[i] = lifted;
            }
        }
        for (int i = 0; i < 4; i++) {
            if (sources[i] >= 0 && place(sources[i], i) != 0) goto failed;
        }
        if (report[1] <= 3) goto failed;
        // Keep the report pipe (close-on-exec) open past close_from: move it just above 3.
        int keep = fcntl(report[1], F_DUPFD_CLOEXEC, 4);
        if (keep < 0) goto failed;
        if (keep != 4) {
            if (dup3(keep, 4, O_CLOEXEC) < 0) goto failed;
        }
        close_from(5);
        if (lifeline_fd < 0) close(3);
        execve(path, argv, envp);
        {
            int error = errno;
            ssize_t ignored = write(4, &error, sizeof error);
            (void)ignored;
        }
        _exit(127);
    failed: {
        int error = errno;
        ssize_t ignored = write(report[1], &error, sizeof error);
        (void)ignored;
        _exit(127);
    }
    }

    close(report[1]);
    int child_error = 0;
    ssize_t got;
    do {
        got = read(report[0], &child_error, sizeof child_error);
    } while (got < 0 && errno == EINTR);
    close(report[0]);
    if (got == (ssize_t)sizeof child_error) {
        int status;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
        return -child_error;
    }
    *pid = child;
    return 0;
}

int deckhand_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno; }
