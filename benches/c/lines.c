/* lines COUNT [STAMPFILE [-w]]: write COUNT 100-byte lines to stdout as fast
 * as it can ("%010d" + 88 x's + "\n"; the last one says ENDOFDATA). With a
 * STAMPFILE, first append "PID START_NS" to it; with -w, wait for a signal
 * once done (so a supervisor does not restart it).
 * lines -r DATA STAMPFILE [-w]: the same, replaying the lines from DATA (a
 * file written by the first form) in 128 KiB reads, as cat does: the
 * producer then costs what the floor's `cat data` costs. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE 100
#define PER_BUF 655 /* 65500 bytes a write */

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void put(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            _exit(1);
        }
        p += w;
        n -= (size_t)w;
    }
}

static void stamp(const char *path, long long start) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) _exit(1);
    char s[64];
    int n = snprintf(s, sizeof s, "%d %lld\n", (int)getpid(), start);
    if (write(fd, s, (size_t)n) != n) _exit(1);
    close(fd);
}

static void replay(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) _exit(1);
    static char buf[128 * 1024];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) _exit(1);
        if (n == 0) break;
        put(buf, (size_t)n);
    }
    close(fd);
}

int main(int argc, char **argv) {
    long long start = now_ns();
    if (argc < 2) return 2;
    if (strcmp(argv[1], "-r") == 0) {
        if (argc < 4) return 2;
        stamp(argv[3], start);
        replay(argv[2]);
        if (argc > 4 && strcmp(argv[4], "-w") == 0)
            for (;;) pause();
        return 0;
    }
    long long count = atoll(argv[1]);
    if (argc > 2) stamp(argv[2], start);
    static char buf[LINE * PER_BUF];
    for (int i = 0; i < PER_BUF; i++) {
        memset(buf + i * LINE, 'x', LINE - 1);
        buf[i * LINE + LINE - 1] = '\n';
    }
    long long i = 0;
    while (i < count) {
        int k = 0;
        for (; k < PER_BUF && i < count; k++, i++) {
            char num[24];
            snprintf(num, sizeof num, "%010lld", i);
            memcpy(buf + k * LINE, num, 10);
            if (i == count - 1) memcpy(buf + k * LINE + 10, " ENDOFDATA", 10);
        }
        put(buf, (size_t)k * LINE);
    }
    if (argc > 3 && strcmp(argv[3], "-w") == 0)
        for (;;) pause();
    return 0;
}
