/* stamp FILE [-w]: append "PID START_NS END_NS\n" (CLOCK_MONOTONIC at the
 * start of main and just before the write) to FILE, then exit 0, or with -w
 * wait until a signal ends it (default dispositions: SIGTERM kills). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    long long start = now_ns();
    if (argc < 2) return 2;
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return 1;
    char buf[96];
    int n = snprintf(buf, sizeof buf, "%d %lld %lld\n", (int)getpid(), start, now_ns());
    if (write(fd, buf, (size_t)n) != n) return 1;
    if (argc > 2 && strcmp(argv[2], "-w") == 0)
        for (;;) pause();
    return 0;
}
