#ifndef DECKHAND_CSANDBOXPTY_H
#define DECKHAND_CSANDBOXPTY_H

#include <sys/types.h>

/// Starts `path` with `argv` and `envp` on a new pseudo-terminal of `rows` × `cols`, as the leader of a new
/// session whose controlling terminal is that PTY, in `cwd`, with every signal at its default disposition
/// and unblocked (a child of a Swift process otherwise inherits blocked SIGINT/SIGTERM). When `uid` is not
/// negative the child drops to `uid`/`gid` (no supplementary groups) before exec. When `plain` is not zero the
/// terminal starts without input echo and without output NL→CR-NL translation, so a program driving the master
/// reads back exactly what the child wrote.
///
/// On success returns 0 and sets `*master` (the PTY's master side) and `*pid`; on failure returns -errno.
/// The child calls only async-signal-safe functions between fork and exec.
int deckhand_spawn_pty(const char *path, char *const argv[], char *const envp[], const char *cwd,
                       unsigned short rows, unsigned short cols, int uid, int gid, int plain, int *master,
                       pid_t *pid);

/// The mode and modification time (seconds) of `path` — `stat`, or `lstat` when `follow` is zero. Returns 0,
/// or -errno. (Reading `struct stat` from Swift trips MemberImportVisibility when Dispatch's C module owns it.)
int deckhand_file_status(const char *path, int follow, unsigned int *mode, long long *modified);

/// Makes this process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): processes of the same user (the agent's shell)
/// can then neither read its `/proc/<pid>/environ` or memory nor trace it. Returns 0, or -errno. (`prctl` is
/// variadic, so Swift cannot call it.)
int deckhand_make_undumpable(void);

/// Caps the processes of this process's user at `limit` (`setrlimit(RLIMIT_NPROC)`, soft and hard). Returns 0, or
/// -errno. (`RLIMIT_NPROC` is a macro Swift does not see.)
int deckhand_limit_processes(unsigned long limit);

#endif
