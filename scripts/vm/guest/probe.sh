#!/bin/sh
# vm-test probe: a Restart=no service that runs once first and second are up.
# Prints one line per check on the console, `VMTEST ok <name>` or
# `VMTEST fail <name>`, then `VMTEST probe done`, then exits 3, which
# powers the VM off (FailureAction). scripts/vm-test greps the serial log for these lines; keep the names
# in step with its PROBE_CHECKS list.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
C=/dev/console
ok() { echo "VMTEST ok $*" > $C; }
fail() { echo "VMTEST fail $*" > $C; }
check() {
    n=$1
    shift
    if "$@" > /tmp/vmtest-out 2>&1; then
        ok "$n"
    else
        fail "$n"
        sed 's/^/VMTEST   | /' /tmp/vmtest-out | head -n 5 > $C
    fi
}
vs="--protocol vsock --vsock-cid 1 --vsock-port 9001"

echo "VMTEST probe start (pid $$)" > $C
# first and second record themselves in /run/vmtest-started; give them 10 s.
i=0
while [ "$(cat /run/vmtest-started 2>/dev/null | wc -l)" -lt 2 ] && [ $i -lt 50 ]; do
    sleep 0.2
    i=$((i + 1))
done

# init is PID 1, running /sbin/init, with the console as stdio.
check pid1 sh -c 'tr "\0" "\n" < /proc/1/cmdline | head -n 1 | grep -qx /sbin/init'
check pid1-stdio-console sh -c 'for f in 0 1 2; do readlink /proc/1/fd/$f | grep -q console || exit 1; done'
# The kernel starts PID 1 at 1024:4096 open files; init raises both to
# fs.nr_open and hands services (this probe) the soft 1024 it started with.
check pid1-nofile sh -c 'n=$(cat /proc/sys/fs/nr_open); l1=$(grep "Max open files" /proc/1/limits)
    l2=$(grep "Max open files" /proc/self/limits); echo "$n | $l1 | $l2"
    echo "$l1" | grep -Eq "files +$n +$n " && echo "$l2" | grep -Eq "files +1024 +$n "'

# Filesystems, with the types and flags of AWS's init.
for m in /dev:devtmpfs /proc:proc /sys:sysfs /run:tmpfs /tmp:tmpfs \
         /dev/shm:tmpfs /dev/pts:devpts /sys/fs/cgroup:tmpfs; do
    check "mount-${m%%:*}" grep -q "^[^ ]* ${m%%:*} ${m#*:} " /proc/mounts
done
check mount-flags-proc sh -c 'grep " /proc proc " /proc/mounts | grep nosuid | grep nodev | grep -q noexec'
check mount-flags-sys sh -c 'grep " /sys sysfs " /proc/mounts | grep nosuid | grep nodev | grep -q noexec'
check mount-mode-run sh -c 'grep " /run tmpfs " /proc/mounts | grep -q "mode=755"'
check mounts-once sh -c '[ "$(grep -c " /proc proc " /proc/mounts)" = 1 ] && [ "$(grep -c " /dev devtmpfs " /proc/mounts)" = 1 ]'
for l in fd stdin stdout stderr; do
    check "link-/dev/$l" test -L /dev/$l
done
check link-dev-fd-works test -e /dev/fd/0
# Every enabled v1 controller of /proc/cgroups is mounted, and cgroup2.
check cgroup-v1 sh -c 'n=0; for c in $(awk "!/^#/ && \$4 == 1 {print \$1}" /proc/cgroups); do
        grep -q " /sys/fs/cgroup/$c cgroup " /proc/mounts || { echo "missing $c"; exit 1; }
        n=$((n + 1)); done; [ $n -gt 0 ]'
check cgroup2 grep -q " /sys/fs/cgroup/unified cgroup2 " /proc/mounts

# NSM step: the "driver" (vsock_loopback) is loaded. That its file was
# unlinked is seen by the helper, which still sees the initramfs root.
check nsm-module-loaded test -d /sys/module/vsock_loopback

# Root switch: the rootfs marker is at /, the initramfs one is not.
check root-switched test -f /etc/vmtest-rootfs
check initramfs-hidden test ! -e /vmtest-initramfs

# Services: started in dependency order (pids grow in fork order).
check services-order sh -c 'p1=$(awk "\$1 == \"first\" {print \$2; exit}" /run/vmtest-started)
        p2=$(awk "\$1 == \"second\" {print \$2; exit}" /run/vmtest-started)
        echo "first=$p1 second=$p2 probe=$1"
        [ -n "$p1" ] && [ -n "$p2" ] && [ "$p1" -lt "$p2" ] && [ "$p2" -lt "$1" ]' - $$
check service-env sh -c '[ "$VMTEST" = 1 ]'
check log-captured grep -q "worker first started" /log/first.log

# The control interfaces, local and over VSOCK (CID 1 is the guest itself).
check initctl-unix-ping initctl -s /run/init.sock ping
check initctl-vsock-ping initctl $vs ping
check initctl-vsock-list sh -c "initctl $vs list | grep first | grep -q . && initctl $vs list | grep -q second"
check initctl-vsock-status initctl $vs status first
check initctl-status-running sh -c 'initctl status second | grep -qiE "running|active"'
check initctl-vsock-logs sh -c "initctl $vs logs first -n 5 | grep -q 'worker first started'"
# logs -f streams over VSOCK: the last lines at once, then it keeps the
# connection open (timeout ends it).
check initctl-vsock-logs-follow sh -c "timeout 2 initctl $vs logs -f first -n 5 > /tmp/follow; grep -q 'worker first started' /tmp/follow"
# VSOCK is read-only (vsock_read_only: true): a change is refused with the
# key to set, and the service keeps running.
check initctl-vsock-read-only sh -c "! initctl $vs stop first 2> /tmp/ro; cat /tmp/ro
        grep -q 'permission denied: read-only connection (set control.vsock_read_only: false' /tmp/ro &&
        initctl status first"

# Containment: escaper's child left its group and session with setsid; its
# cgroup (init-1/escaper.service under cgroup2) holds it anyway. Copies are
# counted by argv (one `ps`: a fork per process is slow under TCG).
copies() { ps -o args | grep -cx "sleep $1"; }
within() { # tries command...: succeeds once the command does, 0.2 s apart
    t=$1
    shift
    until "$@"; do
        t=$((t - 1))
        [ $t -le 0 ] && return 1
        sleep 0.2
    done
}
cg=/sys/fs/cgroup/unified/init-1/escaper.service
whole() { # one copy of the escaper, three processes in the cgroup
    [ "$(copies 700001)" = 1 ] && initctl status escaper | grep -qxF "  CGroup: $cg (3 processes)"
}
none_left() { [ "$(copies 700001)" = 0 ] && [ "$(copies 700002)" = 0 ]; }
restarted_once() {
    initctl --json status escaper | grep -q '"restart_count":1,' && whole
}
escaper_in_cgroup() {
    p=$(ps -o pid,args | awk '$2 == "sleep" && $3 == "700001" {print $1; exit}')
    [ -n "$p" ] || return 1
    echo "escaper $p: $(grep "^0::" "/proc/$p/cgroup")"
    grep -qx "0::/init-1/escaper.service" "/proc/$p/cgroup"
}
check cgroup-status within 50 whole
check cgroup-holds-escaper escaper_in_cgroup
initctl stop escaper > /dev/null 2>&1
check cgroup-stop-kills-escaper within 50 none_left
initctl start escaper > /dev/null 2>&1
within 50 whole
# A crash: SIGKILL to the main process; Restart=always starts it again.
kill -9 "$(initctl --json status escaper | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')"
check cgroup-one-copy-after-crash within 50 restarted_once

# Service types: the oneshot finished before what requires it started; the
# notify service (run as nobody) is running once it said READY=1 (vm-test
# checks from init's console lines that what is ordered after it started
# only then).
check oneshot-exited sh -c 'initctl --json status keys | grep -q "\"state\":\"exited\""'
check oneshot-before-dependent sh -c 'initctl --json status app | grep -q "\"state\":\"running\"" && initctl logs app | grep -q "app has the key"'
ready_running() { initctl --json status ready | grep -q "\"state\":\"running\""; }
check notify-ready within 50 ready_running
check notify-user sh -c 'p=$(initctl --json status ready | sed -n "s/.*\"pid\":\([0-9]*\).*/\1/p"); grep -E "^Uid:[[:space:]]+65534" /proc/$p/status'

# PID 1 reaps orphans: the helper's child exited long ago; no zombies.
check no-zombies sh -c '! grep -l "^State:.*Z" /proc/[0-9]*/status'

# A change request goes into init's log with its peer (vm-test checks).
initctl reload > /tmp/vmtest-out 2>&1 || {
    fail "initctl-reload"
    sed 's/^/VMTEST   | /' /tmp/vmtest-out > $C
}
echo "VMTEST probe done" > $C
# The end: probe.service has FailureAction = "poweroff".
exit 3
