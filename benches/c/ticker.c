/* ticker COUNT INTERVAL_US: COUNT times, write "tick N NS\n" (NS =
 * CLOCK_MONOTONIC just before the write) to stdout with one write(2), then
 * sleep INTERVAL_US; then wait for a signal. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long count = atol(argv[1]);
    long us = atol(argv[2]);
    for (long i = 0; i < count; i++) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "tick %ld %lld\n", i, now_ns());
        if (write(1, buf, (size_t)n) != n) return 1;
        usleep((useconds_t)us);
    }
    for (;;) pause();
}
