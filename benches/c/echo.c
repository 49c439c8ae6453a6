#define _GNU_SOURCE
/* echo SOCKET: the floor of a control request: one epoll loop on a Unix
 * socket answering each line it reads with the same line. Level-triggered,
 * non-blocking, many clients; runs until killed. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAXC 1024
static char inbuf[MAXC][4096];
static size_t inlen[MAXC];

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    unlink(argv[1]);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 128) < 0) return 1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    if (c >= MAXC) { close(c); continue; }
                    inlen[c] = 0;
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            ssize_t r = read(fd, inbuf[fd] + inlen[fd], sizeof inbuf[fd] - inlen[fd]);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                continue;
            }
            inlen[fd] += (size_t)r;
            char *start = inbuf[fd], *end = inbuf[fd] + inlen[fd], *nl;
            while ((nl = memchr(start, '\n', (size_t)(end - start))) != NULL) {
                size_t len = (size_t)(nl - start) + 1;
                if (write(fd, start, len) < 0) break;
                start += len;
            }
            inlen[fd] = (size_t)(end - start);
            memmove(inbuf[fd], start, inlen[fd]);
            if (inlen[fd] == sizeof inbuf[fd]) inlen[fd] = 0;
        }
    }
}
