# drover — build, demo and test entry points. See README.md.
#
#   make setup      install every system package and the Rust musl target (root)
#   make demo       PXE-boot a VM into the agent and show what it does
#   make test       lints, unit tests, the QEMU netboot tests and the scale tests
#   make bench-scale  http vs chain vs udpcast vs torrent for N = 1..32 nodes (long)
#   make initramfs  target/drover/{vmlinuz,initrd.img}

SHELL := /bin/bash
CARGO ?= cargo
MUSL := x86_64-unknown-linux-musl
OUT := target/drover
AGENT := target/$(MUSL)/release/drover-agent
INITRAMFS_BIN := target/release/drover-initramfs
SERVER_BIN := target/release/drover-server

APT_PACKAGES := qemu-system-x86 qemu-utils ipxe-qemu ipxe ovmf dnsmasq-base busybox-static \
	gdisk e2fsprogs dosfstools mtools syslinux syslinux-common systemd-boot-efi \
	linux-image-amd64 iproute2 file cpio udpcast gnuplot-nox \
	mktorrent transmission-cli aria2 python3-libtorrent opentracker

.PHONY: all setup agent initramfs server demo test lint unit qemu-test scale-test clean

all: initramfs server

# qemu-utils/bookworm: a machine may come with a newer qemu-utils (from
# bookworm-backports) that Breaks Debian 12's qemu-system-x86; the two must
# be one QEMU, so take Debian's (a downgrade where needed).
setup:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends --allow-downgrades \
		$(filter-out qemu-utils,$(APT_PACKAGES)) qemu-utils/bookworm
	rustup target add $(MUSL)

# The agent: one static musl binary, checked to really be static.
agent:
	$(CARGO) build --release --target $(MUSL) -p drover-agent
	@file -L $(AGENT) | tee /dev/stderr | grep -Eq 'statically linked|static-pie linked' \
		|| { echo "error: $(AGENT) is not statically linked"; exit 1; }
	@echo "agent: $(AGENT) $$(stat -c %s $(AGENT)) bytes ($$(( $$(stat -c %s $(AGENT)) / 1024 )) KiB, stripped)"

$(INITRAMFS_BIN) $(SERVER_BIN) &:
	$(CARGO) build --release -p drover-initramfs -p drover-server

server: $(SERVER_BIN)

# Kernel: the newest installed Debian kernel that has modules (default
# linux-image-amd64); override with KERNEL_RELEASE=...
# The image-signing key pair: generated once, its public half baked into
# the initramfs as /etc/drover/trusted.pub (KEY_DIR=... to use your own).
KEY_DIR ?= $(OUT)/keys
$(KEY_DIR)/drover.pub: | $(SERVER_BIN)
	$(SERVER_BIN) key generate --out $(KEY_DIR)

initramfs: agent $(INITRAMFS_BIN) $(KEY_DIR)/drover.pub
	@mkdir -p $(OUT)
	rel=$${KERNEL_RELEASE:-$$($(INITRAMFS_BIN) --print-kernel-release)} && \
	$(INITRAMFS_BIN) --agent $(AGENT) --kernel-release $$rel --output $(OUT)/initrd.img \
		--program /sbin/mke2fs --program /sbin/mkfs.fat \
		--file /etc/drover/trusted.pub=$(KEY_DIR)/drover.pub \
		--file /etc/drover/modules=initramfs/etc/modules && \
	cp /boot/vmlinuz-$$rel $(OUT)/vmlinuz && \
	echo "kernel: $(OUT)/vmlinuz ($$rel)"

demo: initramfs server
	$(CARGO) run --release -p drover-qemu-tests --bin drover-demo

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --exclude drover-qemu-tests --exclude drover-bench

qemu-test: initramfs server
	$(CARGO) test --release -p drover-qemu-tests -- --test-threads=2

# The process-level scale harness (bench/scale) in its small form: N=4 per
# transport and the fault tests (chain: tests/faults.rs, torrent:
# tests/torrent_faults.rs), against the static agent and the release
# server. One test at a time: they time themselves on 2 shared cores.
scale-test: agent
	$(CARGO) build --release -p drover-server
	DROVER_AGENT_BIN=$(AGENT) DROVER_SERVER_BIN=$(SERVER_BIN) \
		$(CARGO) test --release -p drover-bench -- --test-threads=1

test: lint unit qemu-test scale-test

clean:
	$(CARGO) clean

# Single-node benchmark: import, and the agent's fetch → verify → inflate →
# write pipeline over loopback, beside cat/dd/curl baselines in the same run.
.PHONY: bench-single
bench-single:
	$(CARGO) build --release -p drover-server -p drover-agent
	bash bench/single.sh

# Scale benchmark: drover http, drover chain, udpcast and drover torrent
# side by side for N = 1, 2, 4, 8, 16, 32 nodes in network namespaces with
# tc-shaped links (bench/scale). Table on stdout (with the server's
# transmitted bytes over the payload); target/bench-scale/{results.csv,plot.png}.
# BENCH_SCALE_ARGS='--n 1,4,16 --size-mib 128' etc.; see bench-scale --help.
.PHONY: bench-scale
bench-scale: agent
	$(CARGO) build --release -p drover-server -p drover-bench
	DROVER_AGENT_BIN=$(AGENT) DROVER_SERVER_BIN=$(SERVER_BIN) \
		target/release/bench-scale --out target/bench-scale $(BENCH_SCALE_ARGS)
