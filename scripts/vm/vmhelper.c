/*
 * vm-test guest helper, run by the kernel as /init (PID 1) before our init.
 *
 * It stands in for the Nitro host side of the enclave boot:
 *   1. loads vsock.ko and vmw_vsock_virtio_transport_common.ko (init itself
 *      loads vsock_loopback.ko as its "NSM driver", which proves that step);
 *   2. listens on VSOCK port 9000 (any CID) like nitro-cli does;
 *   3. takes away what the kernel gave it: closes fds 0-2 and removes
 *      /dev/console and /dev, so init starts exactly as in an enclave whose
 *      initramfs has no /dev/console;
 *   4. forks: the child answers one heartbeat (reads 0xB7, reports on the
 *      console, echoes it); the parent execs /sbin/init, keeping PID 1;
 *   5. forks a second child that follows init's events over VSOCK as the
 *      host would (CID 1, port 9001, `{"Events":{"since":N}}`, again after
 *      a lost connection) and prints each as `VMHELPER event <json>`, up
 *      to the `final` event init sends before powering off.
 *
 * Every line it prints starts with "VMHELPER" and goes to the console fd it
 * kept (CLOEXEC, so init never sees it).
 *
 * Also installed in the guest's root as /opt/vmtest/vmhelper, where
 * `vmhelper notify MSG` sends MSG to $NOTIFY_SOCKET as sd_notify does (the
 * guest's busybox cannot send a Unix datagram).
 *
 * Build: gcc -static -O2 -o vmhelper vmhelper.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define HEARTBEAT_PORT 9000
#define HEARTBEAT 0xB7

static int console = -1;

static void say(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof buf - 2)
        n = sizeof buf - 2;
    buf[n++] = '\n';
    if (console >= 0)
        (void)!write(console, buf, n);
}

static const char *load(const char *path)
{
    static char res[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(res, sizeof res, "open:%s", strerror(errno));
        return res;
    }
    int rc = (int)syscall(SYS_finit_module, fd, "", 0);
    int e = errno;
    close(fd);
    if (rc != 0 && e != EEXIST) {
        snprintf(res, sizeof res, "finit_module:%s", strerror(e));
        return res;
    }
    return "ok";
}

static int listener(void)
{
    int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
                             .svm_port = HEARTBEAT_PORT };
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 4) != 0) {
        int e = errno;
        close(s);
        errno = e;
        return -1;
    }
    /* Keep it away from 0-2, which init must find closed. */
    int high = fcntl(s, F_DUPFD_CLOEXEC, 10);
    close(s);
    return high;
}

/* The child: answer heartbeats until one was echoed, then exit (init, as
 * PID 1, has to reap us: one more thing the test sees). */
static void serve(int ls, const char *listen_err)
{
    if (ls < 0) {
        /* Listening failed before init loaded the loopback transport;
         * try again for a while (init retries its heartbeat). */
        for (int i = 0; i < 100 && ls < 0; i++) {
            usleep(100 * 1000);
            ls = listener();
        }
        if (ls < 0) {
            say("VMHELPER listen-failed %s", listen_err);
            _exit(1);
        }
    }
    for (;;) {
        struct sockaddr_vm peer;
        socklen_t len = sizeof peer;
        int c = accept(ls, (struct sockaddr *)&peer, &len);
        if (c < 0) {
            if (errno == EINTR)
                continue;
            say("VMHELPER accept-failed %s", strerror(errno));
            _exit(1);
        }
        unsigned char b = 0;
        ssize_t n = read(c, &b, 1);
        if (n != 1) {
            say("VMHELPER heartbeat-read-failed n=%zd", n);
            close(c);
            continue;
        }
        /* Checks made at heartbeat time, from the initramfs root: init has
         * loaded and unlinked its "NSM driver" and mounted /dev and /proc. */
        int unlinked = access("/vsock_loopback.ko", F_OK) != 0 && errno == ENOENT;
        int loaded = access("/sys/module/vsock_loopback", F_OK) == 0;
        say("VMHELPER nsm-driver %s %s", unlinked ? "unlinked" : "still-present",
            loaded ? "loaded" : "not-loaded");
        if (b != HEARTBEAT) {
            say("VMHELPER heartbeat-wrong-byte 0x%02x", b);
            close(c);
            continue;
        }
        say("VMHELPER heartbeat 0x%02x from cid %u, echoing", b, peer.svm_cid);
        if (write(c, &b, 1) != 1) {
            say("VMHELPER heartbeat-echo-failed %s", strerror(errno));
            close(c);
            continue;
        }
        close(c);
        _exit(0);
    }
}

/* sd_notify: one datagram to $NOTIFY_SOCKET. */
static int notify(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return 2;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, path);
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return 1;
    ssize_t n = sendto(s, msg, strlen(msg), 0, (struct sockaddr *)&a, sizeof a);
    close(s);
    /* init believes a message by its sender's process group, which it can
     * only look up while the sender lives: stay a while. */
    usleep(1000 * 1000);
    return n < 0;
}

/* Follow init's events over VSOCK until the final one (see 5. above). */
static void follow_events(void)
{
    unsigned long last = 0;
    static char line[65536];
    for (int tries = 0; tries < 1200; tries++) {
        int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = 1, .svm_port = 9001 };
        if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
            if (s >= 0)
                close(s);
            usleep(100 * 1000);
            continue;
        }
        char req[64];
        int n = snprintf(req, sizeof req, "{\"Events\":{\"since\":%lu}}\n", last);
        if (write(s, req, n) != n) {
            close(s);
            continue;
        }
        size_t len = 0;
        for (;;) {
            ssize_t r = read(s, line + len, sizeof line - 1 - len);
            if (r <= 0)
                break;
            len += r;
            char *nl;
            while ((nl = memchr(line, '\n', len))) {
                *nl = 0;
                char *seq = strstr(line, "\"seq\":");
                if (seq)
                    last = strtoul(seq + 6, NULL, 10);
                if (console >= 0) {
                    (void)!write(console, "VMHELPER event ", 15);
                    (void)!write(console, line, nl - line);
                    (void)!write(console, "\n", 1);
                }
                int final = strstr(line, "\"kind\":\"final\"") != NULL;
                size_t used = nl + 1 - line;
                memmove(line, nl + 1, len - used);
                len -= used;
                if (final) {
                    say("VMHELPER events: final event received");
                    _exit(0);
                }
            }
            if (len == sizeof line - 1)
                len = 0; /* a line longer than the buffer: drop it */
        }
        close(s);
    }
    say("VMHELPER events: gave up");
    _exit(1);
}

int main(int argc, char **args)
{
    if (argc == 3 && strcmp(args[1], "notify") == 0)
        return notify(args[2]);

    int open_fds[3];
    for (int fd = 0; fd < 3; fd++)
        open_fds[fd] = fcntl(fd, F_GETFD) != -1;

    console = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (console < 0 && open_fds[2])
        console = fcntl(2, F_DUPFD_CLOEXEC, 10);
    else if (console >= 0 && console < 10) {
        int high = fcntl(console, F_DUPFD_CLOEXEC, 10);
        close(console);
        console = high;
    }
    /* The firmware's last line may lack its newline: start a fresh one. */
    if (console >= 0)
        (void)!write(console, "\n", 1);
    say("VMHELPER start pid %d, kernel-opened fds 0-2: %d%d%d", (int)getpid(),
        open_fds[0], open_fds[1], open_fds[2]);

    say("VMHELPER insmod vsock.ko %s", load("/lib/vm/vsock.ko"));
    say("VMHELPER insmod vmw_vsock_virtio_transport_common.ko %s",
        load("/lib/vm/vmw_vsock_virtio_transport_common.ko"));

    int ls = listener();
    char listen_err[128] = "";
    if (ls < 0)
        snprintf(listen_err, sizeof listen_err, "%s", strerror(errno));
    say("VMHELPER listen vsock port %d %s", HEARTBEAT_PORT, ls >= 0 ? "ok" : listen_err);

    /* Take away what init must cope without. */
    unlink("/dev/console");
    rmdir("/dev");
    close(0);
    close(1);
    close(2);
    int closed = 1;
    for (int fd = 0; fd < 3; fd++)
        closed &= fcntl(fd, F_GETFD) == -1;
    struct stat st;
    int dev_gone = stat("/dev", &st) != 0;
    say("VMHELPER handing over: fds 0-2 %s, /dev %s", closed ? "closed" : "OPEN",
        dev_gone ? "absent" : "PRESENT");

    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        serve(ls, listen_err);
        _exit(0);
    }
    if (pid < 0)
        say("VMHELPER fork failed: %s", strerror(errno));
    if (ls >= 0)
        close(ls);
    if (fork() == 0) {
        setsid();
        follow_events();
    }

    char *argv[] = { "/sbin/init", NULL };
    char *envp[] = { "HOME=/", "TERM=linux", NULL };
    execve(argv[0], argv, envp);
    say("VMHELPER exec /sbin/init failed: %s", strerror(errno));
    for (;;)
        pause();
}
