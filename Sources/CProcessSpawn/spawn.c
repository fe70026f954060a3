#define _GNU_SOURCE
#include "deckhand_spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/// A copy of `fd` numbered 10 or above (close-on-exec), so that placing one descriptor at 0–3 in the child
/// can never overwrite another that is still to be placed. Returns -1 (errno set) on failure.
static int lift(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 10); }

/// Lifts each of the four descriptors that is not negative into `lifted` (-1 for the others). Returns 0, or
/// -errno with what was lifted so far closed.
static int lift_all(const int sources[4], int lifted[4]) {
    for (int i = 0; i < 4; i++) lifted[i] = -1;
    for (int i = 0; i < 4; i++) {
        if (sources[i] < 0) continue;
        lifted[i] = lift(sources[i]);
        if (lifted[i] < 0) {
            int error = -errno;
            for (int j = 0; j < i; j++) {
                if (lifted[j] >= 0) close(lifted[j]);
                lifted[j] = -1;
            }
            return error;
        }
    }
    return 0;
}

static void close_all(const int lifted[4]) {
    for (int i = 0; i < 4; i++) {
        if (lifted[i] >= 0) close(lifted[i]);
    }
}

int deckhand_spawn_process(const char *path, char *const argv[], char *const envp[], int stdin_fd, int stdout_fd,
                           int stderr_fd, int lifeline_fd, pid_t *pid) {
    const int sources[4] = {stdin_fd, stdout_fd, stderr_fd, lifeline_fd};
    int lifted[4];
    int result = lift_all(sources, lifted);
    if (result != 0) return result;

    // posix_spawn clones with CLONE_VM | CLONE_VFORK: no copy of this (large, many-threaded) process's page
    // tables, unlike fork, and the caller waits only until the child has exec'd.
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int error = posix_spawn_file_actions_init(&actions);
    if (error != 0) {
        close_all(lifted);
        return -error;
    }
    error = posix_spawnattr_init(&attributes);
    if (error != 0) {
        posix_spawn_file_actions_destroy(&actions);
        close_all(lifted);
        return -error;
    }
    for (int target = 0; target < 4 && error == 0; target++) {
        if (lifted[target] >= 0) error = posix_spawn_file_actions_adddup2(&actions, lifted[target], target);
    }
    if (error == 0) error = posix_spawn_file_actions_addclosefrom_np(&actions, lifted[3] >= 0 ? 4 : 3);

    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    if (error == 0) error = posix_spawnattr_setsigmask(&attributes, &none);
    if (error == 0) error = posix_spawnattr_setsigdefault(&attributes, &all);
    if (error == 0) {
        error = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                                          POSIX_SPAWN_SETSID);
    }
    if (error == 0) error = posix_spawn(pid, path, &actions, &attributes, argv, envp);
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) result = -error;

    close_all(lifted);
    return result;
}

int deckhand_spawn_process_as(const char *path, char *const argv[], char *const envp[], int stdin_fd,
                              int stdout_fd, int stderr_fd, int lifeline_fd, uid_t uid, gid_t gid, pid_t *pid) {
    const int sources[4] = {stdin_fd, stdout_fd, stderr_fd, lifeline_fd};
    int lifted[4];
    int result = lift_all(sources, lifted);
    if (result != 0) return result;

    // No signal handler of this process may run in the child while it shares this process's memory.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    volatile int child_error = 0;
    pid_t child = vfork();
    if (child == 0) {
        // The child: its own descriptor and signal tables, this process's memory until it execs.
        struct sigaction standard = {0};
        standard.sa_handler = SIG_DFL;
        for (int number = 1; number < _NSIG; number++) {
            if (number != SIGKILL && number != SIGSTOP) sigaction(number, &standard, NULL);
        }
        for (int target = 0; target < 4; target++) {
            if (lifted[target] >= 0 && dup2(lifted[target], target) < 0) goto failed;
        }
        closefrom(lifted[3] >= 0 ? 4 : 3);
        if (setsid() < 0) goto failed;
        if (syscall(SYS_setgroups, 0, NULL) != 0) goto failed;
        if (syscall(SYS_setresgid, gid, gid, gid) != 0) goto failed;
        if (syscall(SYS_setresuid, uid, uid, uid) != 0) goto failed;
        sigset_t none;
        sigemptyset(&none);
        syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, _NSIG / 8);
        execve(path, argv, envp);
    failed:
        child_error = errno;
        _exit(127);
    }
    int spawn_error = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (child < 0) {
        result = -spawn_error;
    } else if (child_error != 0) {
        result = -child_error;
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {}
    } else {
        *pid = child;
    }

    close_all(lifted);
    return result;
}

int deckhand_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno; }
