#!/bin/sh
# A long-running vm-test service. Records its pid and start time, says hello
# on stdout (for the log capture check) and, on SIGTERM, reports on the
# console so the host sees the stop order.
name=$1
read -r up _ < /proc/uptime
echo "$name $$ $up" >> /run/vmtest-started
echo "worker $name started (pid $$, VMTEST=$VMTEST)"
trap 'echo "VMTEST stop $name" > /dev/console; kill $! 2>/dev/null; exit 0' TERM
sleep 100000 &
wait $!
