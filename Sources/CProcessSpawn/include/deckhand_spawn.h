#ifndef DECKHAND_CPROCESSSPAWN_H
#define DECKHAND_CPROCESSSPAWN_H

#include <sys/types.h>

/// Starts `path` with `argv` and `envp` as the leader of a new session (so its process group is its pid and
/// a signal to `-pid` reaches everything it starts), with every signal at its default disposition and
/// unblocked (a child of a Swift process otherwise inherits blocked SIGINT/SIGTERM).
///
/// The child's standard input, output and error become `stdin_fd`, `stdout_fd` and `stderr_fd`. When
/// `lifeline_fd` is not negative it becomes the child's descriptor 3 (the read end of a pipe whose write end
/// the parent keeps: the child sees end-of-file when the parent dies). Every other descriptor is closed.
///
/// On success returns 0 and sets `*pid`; on failure returns -errno (an exec failure included). Uses
/// posix_spawn, so the caller is held only until the child has exec'd, and no page tables are copied.
int deckhand_spawn_process(const char *path, char *const argv[], char *const envp[], int stdin_fd, int stdout_fd,
                           int stderr_fd, int lifeline_fd, pid_t *pid);

/// `deckhand_spawn_process`, and the child also becomes `uid`:`gid` with no supplementary groups before it
/// execs (the caller must be root). Saves the exec of a helper such as `setpriv`: the child is made with
/// vfork and drops its ids with the raw system calls (glibc's wrappers would change every thread of this
/// process, whose memory the child shares until it execs), as glibc's posix_spawn does for its own
/// attributes. Returns 0 and sets `*pid`, or -errno of the first step that failed (the child is reaped).
int deckhand_spawn_process_as(const char *path, char *const argv[], char *const envp[], int stdin_fd,
                              int stdout_fd, int stderr_fd, int lifeline_fd, uid_t uid, gid_t gid, pid_t *pid);

/// A pipe with both ends close-on-exec (`pipe2(O_CLOEXEC)`, which Swift's Glibc module does not export).
/// Returns 0, or -errno.
int deckhand_pipe_cloexec(int fds[2]);

#endif
