#!/bin/bash
# Boots a throwaway Debian host: systemd as PID 1 in fresh pid/mount/net/uts/ipc/cgroup
# namespaces, on an overlay of / whose writes live in a tmpfs and vanish with the host.
#
#   boot.sh NAME      run by the test harness; ends up as `unshare`, whose child is PID 1
#   boot.sh --init    run by unshare inside the namespaces; ends up as systemd
#
# NODEAPP_HOST_SHARE: colon-separated paths to bind read-only into the host at the same
# path. The host gets fresh /tmp and /run, so a checkout under them (a CI clone in /tmp)
# would otherwise not be visible inside.
#
# Each host gets its own sub-cgroup in every hierarchy before `unshare --cgroup`, so hosts
# that run at the same time do not share cgroup accounting or limits.
set -euo pipefail

if [ "${1:-}" != "--init" ]; then
    name=${1:?usage: boot.sh NAME}
    for hier in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
        [ -e "$hier/cgroup.procs" ] || continue
        mkdir -p "$hier/nodeapp-hosts/$name"
        # A new cpuset cgroup starts with no CPUs and refuses tasks until given some.
        for f in cpuset.cpus cpuset.mems; do
            [ -e "$hier/$f" ] || continue
            cat "$hier/$f" > "$hier/nodeapp-hosts/$f"
            cat "$hier/$f" > "$hier/nodeapp-hosts/$name/$f"
        done
        echo $$ > "$hier/nodeapp-hosts/$name/cgroup.procs"
    done
    export NODEAPP_HOST_NAME=$name
    exec unshare --pid --fork --kill-child --mount --uts --ipc --net --cgroup \
        /bin/bash "$0" --init
fi

name=$NODEAPP_HOST_NAME
mount --make-rprivate /
base=$(mktemp -d /tmp/nodeapp-host.XXXXXX)
mount -t tmpfs -o mode=755 tmpfs "$base"
mkdir "$base/upper" "$base/work" "$base/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
root=$base/root

mount --rbind /dev "$root/dev"
mount --bind /sys "$root/sys"
# Remount the cgroup hierarchies so that, inside the cgroup namespace, their root is the
# sub-cgroup made above.
mount -t tmpfs -o mode=755 tmpfs "$root/sys/fs/cgroup"
while read -r _ mnt fstype opts _; do
    case "$fstype" in
    cgroup2) dir=$root$mnt; mkdir -p "$dir"; mount -t cgroup2 cgroup2 "$dir" ;;
    cgroup)
        dir=$root$mnt; mkdir -p "$dir"
        sub=$(echo "$opts" | tr ',' '\n' | grep -v -E '^(rw|ro|relatime|nosuid|nodev|noexec)$' | paste -sd, -)
        mount -t cgroup -o "$sub" cgroup "$dir" ;;
    esac
done < <(grep -E ' /sys/fs/cgroup' /proc/mounts)
mount -t tmpfs -o mode=755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
IFS=: read -r -a shares <<< "${NODEAPP_HOST_SHARE:-}"
for share in "${shares[@]}"; do
    [ -n "$share" ] || continue
    mkdir -p "$root$share"
    mount --bind "$share" "$root$share"
    mount -o remount,bind,ro "$root$share"
done

mkdir -p "$root/oldroot"
cd "$root"
pivot_root . oldroot
# /proc must be mounted before /oldroot goes, or the lazy unmount fails and the real root
# stays reachable from inside.
mount -t proc proc /proc
umount -l /oldroot
rmdir /oldroot

hostname "$name"
echo "$name" > /etc/hostname
# The image ships the container stub that makes deb-systemd-invoke do nothing.
rm -f /usr/sbin/policy-rc.d
for unit in postgresql.service getty@.service serial-getty@.service console-getty.service \
    systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer man-db.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer ssh.service cron.service \
    systemd-networkd-wait-online.service; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done
export container=nodeapp-test
exec /lib/systemd/systemd --system
