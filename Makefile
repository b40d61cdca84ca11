# The two commands a fresh machine needs: `make demo` and `make test`. Both install what they
# need first (scripts/setup.sh is idempotent and quick when everything is there).

CARGO ?= cargo

.PHONY: demo test lint bench setup build deb test-zabbix test-zabbix7 test-ansible test-netbox test-failclosed test-pve

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

demo: build
	bash scripts/demo.sh

# The tests that need root (the namespace lab, wireguard-go, nft) carry the `root-tests` feature's
# mark: a plain `cargo test` lists them as ignored, saying so; here they run (as root). The
# benchmarks among the tests run only from `make bench`; the NetBox tests from test-netbox.
ROOT_TESTS = --features wgadm/root-tests,wgadm-device/root-tests,wgadm-lab/root-tests
test: setup
	$(CARGO) test --workspace --locked $(ROOT_TESTS)
	$(MAKE) --no-print-directory test-zabbix
	$(MAKE) --no-print-directory test-zabbix7
	$(MAKE) --no-print-directory test-ansible
	$(MAKE) --no-print-directory test-netbox
	$(MAKE) --no-print-directory test-failclosed
	$(MAKE) --no-print-directory test-pve
	$(MAKE) --no-print-directory test-vm

# The Ansible collection against an unprivileged Debian 13 LXC container standing in for CT 90
# (tests/lxc; the first run debootstraps and caches the rootfs).
test-ansible: setup
	bash tests/ansible/test.sh

# The firewall fails closed across reboots of the LXC container (issue 10): a refused ruleset
# at boot, a normal boot, `systemctl restart nftables`; uses the debug build `cargo test` made.
test-failclosed: setup
	$(CARGO) build --locked -p wgadm
	bash tests/lxc/failclosed.sh

# The Zabbix template and agent config against a real Zabbix 6.0 server, frontend API and
# zabbix_agent2 (Debian's packages; the first run installs them and prepares a database).
test-zabbix: setup
	bash tests/zabbix/setup.sh
	$(CARGO) build --locked -p wgadm -p wgadm-lab
	bash tests/zabbix/test.sh

# The same lab and checks against Zabbix 7.0 LTS from Debian 13's packages (what CT 90 runs), in
# LXC containers from a cached rootfs (the first run builds it: ~6 min; then ~2 min a run).
test-zabbix7: setup
	bash tests/zabbix/setup.sh --zabbix7
	$(CARGO) build --locked -p wgadm -p wgadm-lab
	bash tests/zabbix/test.sh --zabbix7

# wgadm netbox sync and peer add --ipam netbox against a real NetBox from PyPI with PostgreSQL
# and Redis from Debian, all on 127.0.0.1 (the first run installs and migrates, ~6 min; then ~25 s).
test-netbox: setup
	bash tests/netbox/test.sh

# The lab tests against the kernel's WireGuard module in a Debian 13 VM (qemu, no network; the
# first run builds and caches the image). Times: tests/vm/README.md "Times".
.PHONY: test-vm
test-vm: setup
	bash tests/vm/run.sh

# scripts/bench-lab.sh in that VM on the kernel's WireGuard (tests/vm/bench.list); not in `make
# test` or `make bench`. Numbers, no pass/fail on time; under TCG only the ratios count.
.PHONY: bench-vm
bench-vm: setup
	WGADM_VM_LIST=tests/vm/bench.list bash tests/vm/run.sh

# community.proxmox's site.yml run against a schema-checked Proxmox VE API stand-in backed by
# real LXC (tests/pve/README.md).
test-pve: setup
	python3 tests/pve/schema_test.py
	bash tests/pve/test.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	cd ansible && ansible-lint

# The Debian package the Ansible role installs (target/debian/wgadm.deb). Its version is the
# crate's plus the build time and commit (scripts/deb-version.sh), so apt installs every rebuild.
deb: setup
	$(CARGO) deb -p wgadm --locked --deb-version "$$(bash scripts/deb-version.sh)" --output target/debian/wgadm.deb

# Benchmarks only: the bench_* tests (daemon poll cost, nft ruleset load; debug build, as root),
# then the scripts (release build). Numbers, no pass/fail on time.
bench: build
	$(CARGO) test --locked -p wgadm --features root-tests,bench --test daemon_lab --test firewall_nft \
		-- bench_ --nocapture --test-threads=1
	bash scripts/bench.sh
	bash scripts/bench-lab.sh
