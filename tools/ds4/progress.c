/*
 * tools/ds4/progress.c — terminal feedback of the chat mode: the one-line progress bar on
 * stderr (only when stderr is a terminal), the model warm-up read that drives the "loading"
 * bar, and the SIGINT flag. Must not: print anything on stdout (that is the answer's).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chat.h"

volatile sig_atomic_t chat_interrupted = 0;

double chat_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void chat_bar_start(chat_bar *b, const char *label, const char *unit, double scale) {
    b->on = isatty(2);
    b->label = label;
    b->unit = unit;
    b->scale = scale > 0 ? scale : 1;
    b->t0 = chat_now_s();
    b->last = 0;
}

void chat_bar_update(chat_bar *b, uint64_t done, uint64_t total) {
    if (!b->on || total == 0) return;
    double now = chat_now_s();
    /* Redraw at most ~10 times a second, and always at the end. */
    if (done < total && now - b->last < 0.1) return;
    b->last = now;
    double el = now - b->t0, frac = (double)done / (double)total;
    double rate = el > 0 ? (double)done / el : 0;
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[30] = '\0';
    char eta[32] = "";
    if (rate > 0 && done < total) snprintf(eta, sizeof eta, "  ETA %.0fs", (double)(total - done) / rate);
    const char *fmt = b->scale == 1 ? "\r\033[2K%s [%s] %.0f/%.0f %s  %.1f %s/s%s" : "\r\033[2K%s [%s] %.2f/%.2f %s  %.2f %s/s%s";
    fprintf(stderr, fmt, b->label, bar, done / b->scale, total / b->scale, b->unit, rate / b->scale, b->unit, eta);
    fflush(stderr);
}

void chat_bar_end(chat_bar *b) {
    if (!b->on) return;
    fprintf(stderr, "\r\033[2K");
    fflush(stderr);
    b->on = false;
}

/* MemTotal of /proc/meminfo in bytes, 0 when unknown. */
static uint64_t mem_total_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

void chat_warm_file(const char *path, int warm) {
    if (warm == 0) return;
    struct stat sb;
    if (stat(path, &sb) != 0 || sb.st_size <= 0) return;
    uint64_t size = (uint64_t)sb.st_size, mem = mem_total_bytes();
    /* Automatic only on a terminal (where the bar shows) and when the file fits in RAM with room
     * to spare; otherwise reading it all would just evict itself. */
    if (warm < 0 && (!isatty(2) || mem == 0 || size > mem / 10 * 8)) return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    size_t chunk = 16u << 20;
    char *buf = malloc(chunk);
    if (!buf) {
        close(fd);
        return;
    }
    chat_bar bar;
    chat_bar_start(&bar, "loading model", "GiB", 1024.0 * 1024 * 1024);
    uint64_t done = 0;
    while (done < size) {
        ssize_t n = read(fd, buf, chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += (uint64_t)n;
        chat_bar_update(&bar, done, size);
    }
    chat_bar_end(&bar);
    free(buf);
    close(fd);
}
