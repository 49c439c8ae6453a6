/* The floors of spawning, as a tiny C parent does it (fork + execv):
 *   parent loop K PROG ARG...  K times: spawn PROG ARG... and wait for it
 *   parent many N PROG ARG...  spawn N copies at once, then wait for a signal
 *                              (the harness kills the process group) */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t spawn(char **argv) {
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    long n = atol(argv[2]);
    char **prog = argv + 3;
    if (strcmp(argv[1], "loop") == 0) {
        for (long i = 0; i < n; i++) {
            pid_t pid = spawn(prog);
            if (pid < 0) return 1;
            int st;
            while (waitpid(pid, &st, 0) < 0) {}
        }
        return 0;
    }
    for (long i = 0; i < n; i++)
        if (spawn(prog) < 0) return 1;
    for (;;) pause();
}
