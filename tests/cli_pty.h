/*
 * tests/cli_pty.h — drives a program through a pseudo-terminal (forkpty) for the `ds4` CLI
 * tests: start with a private HOME/XDG dirs, send keys, wait for text with a deadline (failing
 * the test with the output's tail), wait for the exit status. Single-threaded; each test owns
 * its child.
 */
#ifndef DS4_TEST_CLI_PTY_H
#define DS4_TEST_CLI_PTY_H

#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <termios.h>
#include <unistd.h>

typedef struct pty_run {
    pid_t pid;
    int fd;
    char *buf;       /* everything the child wrote, NUL-terminated */
    size_t len, cap;
    size_t mark;     /* searches start here; moves past each match */
    bool eof;
} pty_run;

static inline double pr_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* env: NULL-terminated "NAME=value" strings set in the child (on top of the parent's). */
static inline void pr_start(pty_run *p, char *const argv[], char *const env[]) {
    memset(p, 0, sizeof *p);
    p->cap = 1 << 16;
    p->buf = malloc(p->cap);
    cr_assert_not_null(p->buf);
    p->buf[0] = '\0';
    struct winsize ws = {.ws_row = 50, .ws_col = 200};
    p->pid = forkpty(&p->fd, NULL, NULL, &ws);
    cr_assert_geq(p->pid, 0, "forkpty: %s", strerror(errno));
    if (p->pid == 0) {
        for (char *const *e = env; e && *e; e++) putenv(*e);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
}

/* Reads what is available within timeout_s; false at EOF. */
static inline bool pr_pump(pty_run *p, double timeout_s) {
    if (p->eof) return false;
    struct pollfd pf = {.fd = p->fd, .events = POLLIN};
    int r = poll(&pf, 1, (int)(timeout_s * 1000));
    if (r <= 0) return true;
    if (p->len + 4097 > p->cap) {
        p->cap *= 2;
        p->buf = realloc(p->buf, p->cap);
        cr_assert_not_null(p->buf);
    }
    ssize_t n = read(p->fd, p->buf + p->len, 4096);
    if (n <= 0) {
        if (n < 0 && errno == EINTR) return true;
        p->eof = true; /* EIO: the child closed the terminal */
        return false;
    }
    p->len += (size_t)n;
    p->buf[p->len] = '\0';
    return true;
}

static inline const char *pr_tail(const pty_run *p) {
    return p->len > 1500 ? p->buf + p->len - 1500 : p->buf;
}

/* Waits for needle after the mark; returns its offset and moves the mark past it. */
static inline size_t pr_expect(pty_run *p, const char *needle, double timeout_s) {
    double end = pr_now() + timeout_s;
    for (;;) {
        const char *hit = strstr(p->buf + p->mark, needle);
        if (hit) {
            size_t off = (size_t)(hit - p->buf);
            p->mark = off + strlen(needle);
            return off;
        }
        double left = end - pr_now();
        if (left <= 0 || !pr_pump(p, left < 0.2 ? left : 0.2)) {
            if (!p->eof || !strstr(p->buf + p->mark, needle))
                cr_assert_fail("waited %.0f s for \"%s\" in the CLI output; its tail:\n%s", timeout_s, needle,
                               pr_tail(p));
        }
    }
}

/* libedit prints the prompt first and switches the terminal to raw mode only when it reads
 * (el_wgetc -> tty_rawmode). A Ctrl+D that reaches the line discipline in between is a
 * canonical EOF, which becomes a NUL byte once the terminal is raw, so the CLI never sees it.
 * A person cannot type that fast; a test can. Wait until the terminal is raw first. */
static inline void pr_wait_raw(pty_run *p, double timeout_s) {
    double end = pr_now() + timeout_s;
    struct termios t;
    while (tcgetattr(p->fd, &t) == 0 && (t.c_lflag & ICANON) && pr_now() < end) pr_pump(p, 0.02);
}

static inline void pr_send(pty_run *p, const char *s) {
    if (strchr(s, '\004')) pr_wait_raw(p, 10);
    size_t n = strlen(s);
    cr_assert_eq(write(p->fd, s, n), (ssize_t)n, "write to the pty failed");
}

/* Reads until the child closes the terminal, then returns its exit status (128+sig if killed). */
static inline int pr_wait(pty_run *p, double timeout_s) {
    double end = pr_now() + timeout_s;
    while (pr_now() < end && pr_pump(p, 0.2)) {}
    int st = 0;
    for (;;) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) break;
        if (pr_now() > end) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            cr_assert_fail("the CLI did not exit within %.0f s; output tail:\n%s", timeout_s, pr_tail(p));
        }
        usleep(20000);
    }
    close(p->fd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static inline void pr_free(pty_run *p) {
    free(p->buf);
    p->buf = NULL;
}

#endif
