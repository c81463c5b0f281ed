#!/usr/bin/env bash
# The deployment test a sysadmin would run by hand (issue #17): the .deb installed into a Debian
# 12 container booted with a real systemd as PID 1, then install, service, an incident from a
# watched log, reload, upgrade, remove, purge and the root-CLI ownership trap, each check printed.
#
#   bash deploy/test-systemd.sh               builds the .deb with deploy/package.sh
#   DEB=target/debian/csirt.deb bash deploy/test-systemd.sh
#
# Needs root, debootstrap, systemd-container (systemd-nspawn) and util-linux (nsenter), and
# Debian's mirror for the first run. The container's root file system is made once with
# debootstrap and kept as a tarball in $CSIRT_TEST_CACHE (default /var/cache/csirt-test); each
# run unpacks a fresh copy, so no run sees another's leftovers.
#
# How the container is run, and why: `systemd-nspawn --boot --register=no --keep-unit` because
# these machines have no D-Bus on the host (registering with systemd-machined, or a scope unit
# of its own, would need it). Commands run inside with nsenter into the init's namespaces, not
# `machinectl shell`/`systemd-run -M` (machined again); systemctl inside reaches the container's
# systemd over its private socket.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${CSIRT_TEST_CACHE:-/var/cache/csirt-test}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# Bump the suffix when the package list changes, so that a stale cache is not reused.
PACKAGES=systemd,systemd-sysv,dbus,procps,tzdata
ROOTFS_TAR=$CACHE/$SUITE-minbase-systemd-v1.tar.zst
CONFIG=/etc/csirt/csirt.toml

started=$(date +%s)
checks=0
pass() {
    checks=$((checks + 1))
    printf '  ok %2d  %s\n' "$checks" "$*"
}
fail() {
    printf '  FAIL   %s\n' "$*" >&2
    if [ -n "${init:-}" ]; then
        echo "--- journalctl -u csirt (last 40 lines)" >&2
        inside journalctl -u csirt --no-pager -n 40 >&2 || true
    fi
    exit 1
}
step() { printf '\n--- %s (%d s)\n' "$*" "$(($(date +%s) - started))"; }

[ "$(id -u)" = 0 ] || { echo "test-systemd.sh must run as root (debootstrap, nspawn, nsenter)" >&2; exit 1; }
for tool in debootstrap systemd-nspawn nsenter zstd; do
    command -v "$tool" >/dev/null || { echo "$tool is required (apt-get install debootstrap systemd-container util-linux zstd)" >&2; exit 1; }
done

deb=${DEB:-}
if [ -z "$deb" ]; then
    step "building the package (deploy/package.sh)"
    deb=$(bash deploy/package.sh)
fi
[ -f "$deb" ] || { echo "no package at $deb" >&2; exit 1; }
version=$(dpkg-deb -f "$deb" Version)

step "root file system ($SUITE, debootstrap minbase + $PACKAGES)"
if [ ! -s "$ROOTFS_TAR" ]; then
    mkdir -p "$CACHE"
    build=$(mktemp -d "$CACHE/build.XXXXXX")
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$build/root" "$MIRROR" >"$build/debootstrap.log" 2>&1 \
        || { tail -20 "$build/debootstrap.log" >&2; rm -rf "$build"; exit 1; }
    # Nothing of the host leaks in: its own hostname and machine id at the first boot.
    echo csirt-test >"$build/root/etc/hostname"
    : >"$build/root/etc/machine-id"
    rm -rf "$build/root/var/cache/apt/archives/"*.deb
    tar --zstd -C "$build/root" -cf "$ROOTFS_TAR.tmp" .
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    rm -rf "$build"
    echo "made $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1))"
else
    echo "cached: $ROOTFS_TAR"
fi
work=$(mktemp -d /var/tmp/csirt-nspawn.XXXXXX)
root=$work/root
mkdir "$root"
tar --zstd -C "$root" -xf "$ROOTFS_TAR"

nspawn=
init=
cleanup() {
    status=$?
    if [ -n "$nspawn" ] && kill -0 "$nspawn" 2>/dev/null; then
        # SIGTERM asks the container's systemd to power off; then the container is gone.
        kill -TERM "$nspawn" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$nspawn" 2>/dev/null || true
        wait "$nspawn" 2>/dev/null || true
    fi
    rm -rf "$work"
    if [ "$status" = 0 ]; then
        echo "test-systemd.sh: $checks checks passed in $(($(date +%s) - started)) s"
    else
        echo "test-systemd.sh: FAILED after $checks checks ($(($(date +%s) - started)) s); console: see above" >&2
    fi
}
trap cleanup EXIT

# A clean environment inside: the host's CARGO_*, CI and locale stay out.
inside() {
    nsenter --target "$init" --mount --uts --ipc --net --pid -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}
unit() { inside systemctl show -p "$1" --value csirt.service; }
wait_for() {
    local what=$1 tries=$2
    shift 2
    for _ in $(seq 1 "$tries"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    fail "$what"
}

running() { [ "$(unit SubState)" = running ]; }
reloads() { inside journalctl -u csirt -o cat --no-pager | grep -c '^reloaded' || true; }
reloaded_since() { [ "$(reloads)" -gt "$1" ]; }
incident_listed() { inside csirt --config "$CONFIG" incidents list | grep -q 203.0.113.77; }
mail_written() { ls "$root/var/lib/csirt/mail/outbox/" | grep -q '\.eml$'; }
refused() { inside journalctl -u csirt -p err -o cat --no-pager | grep -q 'reload refused.*csirt.toml:'; }

step "booting the container (systemd-nspawn --boot --register=no --keep-unit)"
systemd-nspawn --boot --register=no --keep-unit --quiet --console=passive \
    --machine=csirt-test -D "$root" >"$work/console.log" 2>&1 </dev/null &
nspawn=$!
for _ in $(seq 1 100); do
    init=$(ps -o pid= --ppid "$nspawn" | tr -d ' ' | head -1 || true)
    [ -n "$init" ] && [ "$(cat "/proc/$init/comm" 2>/dev/null)" = systemd ] && break
    init=
    kill -0 "$nspawn" 2>/dev/null || { cat "$work/console.log" >&2; echo "systemd-nspawn exited" >&2; exit 1; }
    sleep 0.2
done
[ -n "$init" ] || { cat "$work/console.log" >&2; echo "no init process under systemd-nspawn" >&2; exit 1; }
state=
for _ in $(seq 1 120); do
    state=$(inside systemctl is-system-running 2>/dev/null || true)
    case $state in running | degraded) break ;; esac
    sleep 0.5
done
case $state in
    running) pass "container booted: systemd is PID 1 (host pid $init), system running" ;;
    degraded) pass "container booted: systemd is PID 1 (host pid $init), system degraded: $(inside systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')" ;;
    *) fail "the container's systemd did not come up (is-system-running: ${state:-nothing})" ;;
esac

step "first install (dpkg -i $deb, version $version)"
cp "$deb" "$root/root/csirt.deb"
inside dpkg -i /root/csirt.deb >"$work/install.out" 2>&1 || { cat "$work/install.out" >&2; fail "dpkg -i"; }
grep -q 'csirt を有効にし、起動しました' "$work/install.out" || { cat "$work/install.out" >&2; fail "the install did not say it started the service"; }
grep -q 'transport = "file" のため送信されず' "$work/install.out" || fail "the install did not say the example addresses get no mail"
pass "dpkg -i printed that the service started and that the example addresses get no mail"
[ "$(inside systemctl is-enabled csirt)" = enabled ] || fail "csirt.service is not enabled"
wait_for "csirt.service active (running)" 60 running
pass "csirt.service enabled and active (running), MainPID $(unit MainPID), user $(unit User)"
memory_max=$(unit MemoryMax)
tasks_max=$(unit TasksMax)
want_memory=$(sed -n 's/^MemoryMax=//p' deploy/csirt.service)
want_tasks=$(sed -n 's/^TasksMax=//p' deploy/csirt.service)
[ -n "$want_memory" ] && [ -n "$want_tasks" ] || fail "deploy/csirt.service sets no MemoryMax= or TasksMax="
[ "$memory_max" = "$(numfmt --from=iec "$want_memory")" ] || fail "MemoryMax is $memory_max, the unit says $want_memory"
[ "$tasks_max" = "$want_tasks" ] || fail "TasksMax is $tasks_max, the unit says $want_tasks"
threads=$(inside awk '/^Threads:/ {print $2}' "/proc/$(unit MainPID)/status")
rss=$(inside awk '/^VmRSS:/ {print $2}' "/proc/$(unit MainPID)/status")
[ "$threads" -lt "$tasks_max" ] || fail "the daemon runs $threads threads, TasksMax is $tasks_max"
pass "limits loaded: MemoryMax=$memory_max ($want_memory) TasksMax=$tasks_max; the daemon runs $threads threads, $((rss / 1024)) MiB resident"
# Whether the kernel enforces them depends on the host: with cgroup v2 (or v1 controllers
# delegated to the container) the service's cgroup carries them; say what this host does.
cgroup=$(unit ControlGroup)
if inside test -f "/sys/fs/cgroup$cgroup/memory.max"; then
    [ "$(inside cat "/sys/fs/cgroup$cgroup/memory.max")" = "$memory_max" ] || fail "memory.max of $cgroup is not $memory_max"
    [ "$(inside cat "/sys/fs/cgroup$cgroup/pids.max")" = "$tasks_max" ] || fail "pids.max of $cgroup is not $tasks_max"
    pass "limits enforced by the kernel: $cgroup memory.max and pids.max"
else
    echo "  note    the kernel does not enforce them in this container: the host's memory and pids controllers are cgroup v1 and not delegated to the container (no $cgroup/memory.max); the values above are what systemd applies on a real host"
fi
inside test -f /var/lib/csirt/csirt.db || fail "the daemon made no store"
[ "$(inside stat -c %U:%G /var/lib/csirt/csirt.db)" = csirt:csirt ] || fail "the store is not csirt:csirt"
pass "store /var/lib/csirt/csirt.db made by the daemon, owned by csirt:csirt"

step "an incident from a watched log (/var/log/auth.log, written inside the container)"
# Debian's rsyslog makes auth.log root:adm 0640; the unit reads it through SupplementaryGroups=adm.
# The daemon started before the file existed: it must pick the file up when it appears.
inside install -m 0640 -o root -g adm /dev/null /var/log/auth.log
inside sh -c 'now=$(TZ=Asia/Tokyo date "+%b %e %H:%M:%S"); for i in 1 2 3 4 5 6; do
    echo "$now csirt-test sshd[4$i]: Failed password for invalid user admin from 203.0.113.77 port 5$i ssh2"
done >>/var/log/auth.log'
wait_for "an incident for 203.0.113.77 in csirt incidents list" 60 incident_listed
inside csirt --config "$CONFIG" incidents list | sed 's/^/    /'
pass "6 failed logins written to /var/log/auth.log → an ssh-bruteforce incident for 203.0.113.77 (csirt incidents list)"
wait_for "a notification .eml in /var/lib/csirt/mail/outbox" 60 mail_written
pass "its notification written to /var/lib/csirt/mail/outbox (transport = \"file\": the example addresses get nothing)"

step "reload (systemctl reload csirt) and a broken config"
pid=$(unit MainPID)
before=$(reloads)
inside systemctl reload csirt || fail "systemctl reload csirt"
wait_for "the daemon to log 'reloaded'" 20 reloaded_since "$before"
[ "$(unit MainPID)" = "$pid" ] || fail "reload changed the MainPID"
pass "systemctl reload csirt: reloaded in place (MainPID $pid unchanged)"
inside cp "$CONFIG" /root/csirt.toml.good
inside sh -c "printf '\n[notify]\nto = [\"twice\"]\n' >>$CONFIG"
broken_line=$(($(inside wc -l <"$root$CONFIG")))
inside systemctl reload csirt || fail "systemctl reload csirt (broken config)"
wait_for "the reload refusal in the journal" 20 refused
refusal=$(inside journalctl -u csirt -p err -o cat --no-pager | grep 'reload refused' | tail -1)
echo "    $refusal"
echo "$refusal" | grep -qE "csirt\.toml:($((broken_line - 1))|$broken_line)" || fail "the refusal does not name csirt.toml:$((broken_line - 1)) (the duplicate [notify])"
[ "$(unit MainPID)" = "$pid" ] && [ "$(unit SubState)" = running ] || fail "the service did not keep running after a refused reload"
pass "a broken config (a second [notify]) refused with file:line, at error level; still running as MainPID $pid"
inside csirt --config "$CONFIG" config check >/dev/null 2>&1 && fail "csirt config check accepted the broken config"
pass "csirt config check rejects it too"
inside cp /root/csirt.toml.good "$CONFIG"
before=$(reloads)
inside systemctl reload csirt
wait_for "the reload after the fix" 20 reloaded_since "$before"
inside csirt --config "$CONFIG" status >"$work/status.out" 2>&1 || true
if grep -q 'エラー: .*\[reload\]' "$work/status.out" && ! grep -q '解決済み' "$work/status.out"; then
    cat "$work/status.out" >&2
    fail "csirt status still shows the reload error after a later reload succeeded"
fi
pass "config restored and reloaded; csirt status no longer reports the superseded reload error"

step "upgrade: the same .deb again, then a newer version"
old=$(unit MainPID)
inside dpkg -i /root/csirt.deb >"$work/upgrade.out" 2>&1 || { cat "$work/upgrade.out" >&2; fail "dpkg -i (reinstall)"; }
grep -q 'csirt を有効にし' "$work/upgrade.out" && fail "a reinstall printed the first-install notice"
wait_for "csirt running again after the reinstall" 60 running
new=$(unit MainPID)
[ "$new" != "$old" ] || fail "the reinstall did not restart the service (MainPID still $old)"
exe=$(inside readlink "/proc/$new/exe")
case $exe in *deleted*) fail "after the reinstall MainPID $new runs $exe" ;; esac
pass "reinstall of $version: restarted (MainPID $old → $new), /proc/$new/exe → $exe"
# A newer version: the same files under a bumped Version, as an upgrade from the archive.
bumped="$version+test1"
pkg=$work/bumped
dpkg-deb -R "$deb" "$pkg"
sed -i "s/^Version: .*/Version: $bumped/" "$pkg/DEBIAN/control"
dpkg-deb --root-owner-group -Zgzip -z1 -b "$pkg" "$root/root/csirt-next.deb" >/dev/null
old=$new
inside dpkg -i /root/csirt-next.deb >"$work/upgrade.out" 2>&1 || { cat "$work/upgrade.out" >&2; fail "dpkg -i (upgrade)"; }
wait_for "csirt running after the upgrade" 60 running
new=$(unit MainPID)
[ "$new" != "$old" ] || fail "the upgrade did not restart the service (MainPID still $old)"
exe=$(inside readlink "/proc/$new/exe")
case $exe in *deleted*) fail "after the upgrade MainPID $new runs $exe" ;; esac
[ "$(inside dpkg-query -W -f '${Version}' csirt)" = "$bumped" ] || fail "the installed version is not $bumped"
[ "$(inside systemctl is-enabled csirt)" = enabled ] || fail "the upgrade left csirt.service not enabled"
pass "upgrade $version → $bumped: restarted (MainPID $old → $new), /proc/$new/exe → $exe, still enabled"
inside csirt --config "$CONFIG" incidents list | grep -q 203.0.113.77 || fail "the incident is gone after the upgrade"
pass "the incident is still there after the upgrade"

step "the CLI as root: csirt db migrate on a fresh store (the ownership trap)"
inside systemctl stop csirt
inside sh -c 'rm -f /var/lib/csirt/csirt.db /var/lib/csirt/csirt.db-wal /var/lib/csirt/csirt.db-shm'
inside csirt --config "$CONFIG" db migrate >/dev/null
owners=$(inside sh -c 'stat -c "%n %U:%G" /var/lib/csirt/csirt.db*')
echo "$owners" | sed 's/^/    /'
echo "$owners" | grep -v ' csirt:csirt$' && fail "csirt db migrate as root left a store file not owned by csirt:csirt"
since=$(inside date '+%Y-%m-%d %H:%M:%S')
inside systemctl start csirt || fail "systemctl start csirt after csirt db migrate as root"
wait_for "csirt running after the root migrate" 60 running
sleep 6 # past RestartSec=5s: a daemon that could not open its store would have failed by now
[ "$(unit SubState)" = running ] && [ "$(unit NRestarts)" = 0 ] || fail "the service does not stay up after csirt db migrate as root"
errors=$(inside journalctl -u csirt -p err -o cat --no-pager --since "$since")
[ -z "$errors" ] || { echo "$errors" >&2; fail "errors in the journal after the root migrate"; }
pass "csirt db migrate as root made the store csirt:csirt; the service then starts and stays up (NRestarts 0, no errors)"

step "remove (dpkg -r)"
pid=$(unit MainPID)
inside dpkg -r csirt >"$work/remove.out" 2>&1 || { cat "$work/remove.out" >&2; fail "dpkg -r"; }
inside test -e /proc/"$pid" && [ "$(inside cat /proc/"$pid"/comm 2>/dev/null)" = csirt ] && fail "dpkg -r left the daemon (pid $pid) running"
inside pgrep -x csirt >/dev/null && fail "a csirt process is still running after dpkg -r"
[ "$(unit ActiveState)" = inactive ] || fail "csirt.service is $(unit ActiveState) after dpkg -r"
inside test -e /lib/systemd/system/csirt.service && fail "dpkg -r left the unit file"
inside test -e /usr/bin/csirt && fail "dpkg -r left /usr/bin/csirt"
pass "dpkg -r: daemon (pid $pid) stopped, no csirt process, unit and binary gone (LoadState=$(unit LoadState))"
inside test -f "$CONFIG" || fail "dpkg -r removed the conffile"
pass "dpkg -r: /etc/csirt/csirt.toml kept (a conffile, until purge)"

step "purge (dpkg -P)"
inside dpkg -P csirt >"$work/purge.out" 2>&1 || { cat "$work/purge.out" >&2; fail "dpkg -P"; }
sed 's/^/    /' "$work/purge.out"
for p in /etc/csirt /etc/systemd/system/multi-user.target.wants/csirt.service /etc/systemd/system/csirt.service \
    /lib/systemd/system/csirt.service /usr/bin/csirt /usr/lib/sysusers.d/csirt.conf /usr/lib/tmpfiles.d/csirt.conf \
    /usr/share/doc/csirt; do
    inside sh -c "[ -e '$p' ] || [ -L '$p' ]" && fail "dpkg -P left $p"
done
leftover=$(inside sh -c 'find /etc /lib/systemd /usr/lib/systemd /usr/share -xdev \( -name "*csirt*" \) 2>/dev/null' || true)
[ -z "$leftover" ] || { echo "$leftover" >&2; fail "dpkg -P left files named csirt"; }
inside dpkg-query -W csirt >/dev/null 2>&1 && fail "dpkg still knows csirt after the purge"
[ "$(unit LoadState)" = not-found ] || fail "csirt.service is $(unit LoadState) after the purge (a mask or a link left?)"
pass "dpkg -P: no /etc/csirt, no enable link or mask, no unit (LoadState=not-found), nothing named csirt in /etc, /lib/systemd, /usr/share"
inside test -f /var/lib/csirt/csirt.db || fail "dpkg -P deleted the incident store"
# What stays in /var/lib/csirt is the record only: the store and the notifications written
# as .eml (transport = "file"); empty directories are gone.
kept=$(inside find /var/lib/csirt -mindepth 1 -printf '%P\n' | LC_ALL=C sort)
echo "$kept" | sed 's/^/    kept: /'
echo "$kept" | grep -vxE 'csirt\.db(-wal|-shm)?|mail|mail/outbox|mail/outbox/[^/]+\.eml' && fail "dpkg -P left something in /var/lib/csirt that is not the record"
inside find /var/lib/csirt -type d -empty | grep -q . && fail "dpkg -P left an empty directory in /var/lib/csirt"
inside getent passwd csirt >/dev/null || fail "dpkg -P removed the system user"
grep -q '/var/lib/csirt' "$work/purge.out" || fail "dpkg -P did not say it kept /var/lib/csirt"
pass "dpkg -P kept /var/lib/csirt/csirt.db and the written notifications (the city's incident record; said so) and the system user csirt (Policy 9.2.2)"
