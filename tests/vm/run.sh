#!/usr/bin/env bash
# The VM lab: runs the project's own lab tests (tests.list) as root inside a Debian 13 VM on the
# kernel's WireGuard module, and exits non-zero when any fails. The VM has no network at all
# (-nic none): every packet stays in the namespaces the tests make inside it.
#
#   bash tests/vm/run.sh            # build the test binaries, the image if not cached, run
#
# Environment:
#   WGADM_VM_ACCEL    tcg (default) or kvm, where /dev/kvm can run a stock kernel
#   WGADM_VM_TIMEOUT  seconds before the VM is killed (default 1800)
#   WGADM_VM_CACHE    image cache (default /var/cache/wgadm-test/vm)
#   WGADM_VM_LIST     the test list (default tests/vm/tests.list; tests/vm/bench.list: the
#                     benchmark, `make bench-vm`, its table printed at the end)
# Results (per-test logs, summary, console, kernel-facts.txt): $CARGO_TARGET_DIR/vm-lab/.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
accel=${WGADM_VM_ACCEL:-tcg}
timeout=${WGADM_VM_TIMEOUT:-1800}
list=${WGADM_VM_LIST:-$here/tests.list}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
out="$target_dir/vm-lab"
t_start=$(date +%s)
log() { echo "vm lab: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "run as root (debootstrap and mkfs need it)"; exit 1; }

tmp=$(mktemp -d /tmp/wgadm-vm.XXXXXX)
qemu_pid=
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill -TERM "$qemu_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash "$here/setup.sh"
image=$(bash "$here/image.sh" | tail -n1)
t_image=$(date +%s)

# The payload: the test binaries and wgadm as built on the host (Debian 12's glibc; the VM's
# Debian 13 has a newer one), the scripts, the packaged units. Debug info is stripped: the
# payload is a disk the VM reads through emulated virtio.
targets=$(awk '!/^#/ && NF && $2 != "script" {print $2}' "$list" | sort -u)
# A test target belongs to the crate whose tests/ holds it (crates/device's `live`, the wgadm
# package's labs); wgadm itself is always built.
cargo_args=(test --no-run --locked -p wgadm --message-format=json)
for t in $targets; do
  files=("$repo"/crates/*/tests/"$t".rs)
  if [ ${#files[@]} -ne 1 ] || [ ! -f "${files[0]}" ]; then
    log "test target $t: expected exactly one crates/*/tests/$t.rs, found: ${files[*]}"
    exit 1
  fi
  pkg=$(sed -n 's/^name = "\(.*\)"/\1/p' "$(dirname "$(dirname "${files[0]}")")/Cargo.toml" | head -n1)
  [[ " ${cargo_args[*]} " == *" -p $pkg "* ]] || cargo_args+=(-p "$pkg")
  cargo_args+=(--test "$t")
done
log "building ${targets:+${targets//$'\n'/, } and }wgadm"
cargo "${cargo_args[@]}" >"$tmp/cargo.json" 2>"$tmp/cargo.err" || {
  cat "$tmp/cargo.err" >&2
  exit 1
}
payload="$tmp/payload"
mkdir -p "$payload/tests" "$payload/bin" "$payload/packaging"
python3 - "$tmp/cargo.json" "$payload" $targets <<'PY'
import json, os, shutil, subprocess, sys
path, payload, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3:])
found, wgadm = {}, None
for line in open(path):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    if "test" in t["kind"] and t["name"] in wanted:
        found[t["name"]] = m["executable"]
    if "bin" in t["kind"] and t["name"] == "wgadm":
        wgadm = m["executable"]
missing = wanted - set(found)
if missing or not wgadm:
    sys.exit(f"cargo built no executable for {sorted(missing) or 'wgadm'}")
def put(src, dst):
    subprocess.run(["strip", "--strip-debug", "-o", dst, src], check=True)
for name, exe in found.items():
    put(exe, os.path.join(payload, "tests", name))
put(wgadm, os.path.join(payload, "bin", "wgadm"))
with open(os.path.join(payload, "env"), "w") as f:
    f.write(f"WGADM_HOST_BIN={wgadm}\n")
PY
cp "$here"/payload/* "$payload/"
# The benchmark (bench.list) runs scripts/bench-lab.sh with release builds, as `make bench` does.
if awk '!/^#/ && $2 == "script" && $3 == "bench.sh" { found = 1 } END { exit !found }' "$list"; then
  log "building wgadm and wgadm-lab (release) for bench.sh"
  cargo build --release --locked --quiet -p wgadm --bin wgadm -p wgadm-lab --bin wgadm-lab
  mkdir -p "$payload/release"
  for b in wgadm wgadm-lab; do strip --strip-debug -o "$payload/release/$b" "$target_dir/release/$b"; done
  cp "$repo/scripts/bench-lab.sh" "$payload/"
fi
cp "$list" "$payload/tests.list"
cp "$repo"/packaging/*.service "$repo"/packaging/*.conf "$payload/packaging/"
tar -cf "$tmp/payload.tar" -C "$payload" .
rm -rf "$payload"
truncate -s 256M "$tmp/results.img"
t_build=$(date +%s)

kvm_args=(-accel tcg,thread=multi -cpu max)
[ "$accel" = kvm ] && kvm_args=(-accel kvm -cpu host)
log "booting $(cat "$image/kernel-version") ($accel, 2 CPUs, 2 GiB, no network); timeout ${timeout} s"
nice -n 5 qemu-system-x86_64 "${kvm_args[@]}" -smp 2 -m 2048 -M q35 \
  -nographic -nic none -no-reboot \
  -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
  -append "console=ttyS0 root=/dev/vda rw panic=-1 quiet" \
  -drive "file=$image/root.img,if=virtio,format=raw,snapshot=on" \
  -drive "file=$tmp/payload.tar,if=virtio,format=raw,readonly=on" \
  -drive "file=$tmp/results.img,if=virtio,format=raw" \
  </dev/null >"$tmp/console.log" 2>&1 &
qemu_pid=$!
# Show the payload's progress lines as they come.
tail -n +1 -f --pid="$qemu_pid" "$tmp/console.log" 2>/dev/null | grep --line-buffered -E '^(vm-lab|    )' >&2 &
deadline=$(($(date +%s) + timeout))
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ "$(date +%s)" -ge $deadline ]; then
    log "the VM did not finish within $timeout s: killed (console: $out/console.log)"
    break
  fi
  sleep 1
done
qemu_rc=0
if kill -0 "$qemu_pid" 2>/dev/null; then
  kill -KILL "$qemu_pid"
  qemu_rc=124
fi
if ! wait "$qemu_pid" 2>/dev/null; then
  r=$?
  [ $qemu_rc = 124 ] || qemu_rc=$r
fi
qemu_pid=
t_end=$(date +%s)

rm -rf "$out"
mkdir -p "$out"
cp "$tmp/console.log" "$out/console.log"
tar -xf "$tmp/results.img" -C "$out" 2>/dev/null || true
rc=$(cat "$out/rc" 2>/dev/null || echo "")
log "image $((t_image - t_start)) s, build and payload $((t_build - t_image)) s, VM $((t_end - t_build)) s, total $((t_end - t_start)) s"
if [ -z "$rc" ]; then
  log "FAILED: the VM wrote no results (qemu exit $qemu_rc); the end of its console:"
  tail -n 40 "$out/console.log" >&2
  exit 1
fi
cat "$out/summary" >&2 || true
[ ! -s "$out/bench.txt" ] || cat "$out/bench.txt"
if [ "$rc" != 0 ]; then
  log "FAILED (exit $rc): logs in $out"
  exit 1
fi
log "passed: $(grep -c '^ok' "$out/summary") tests against the kernel's WireGuard; logs in $out"
