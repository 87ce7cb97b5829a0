# drover — build, demo and test entry points. See README.md.
#
#   make setup      install every system package and the Rust musl target (root)
#   make demo       PXE-boot a VM into the agent and show what it does
#   make test       lints, unit tests, and the QEMU netboot tests
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
	linux-image-amd64 iproute2 file cpio

.PHONY: all setup agent initramfs server demo test lint unit qemu-test clean

all: initramfs server

setup:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(APT_PACKAGES)
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
	$(CARGO) test --workspace --exclude drover-qemu-tests

qemu-test: initramfs server
	$(CARGO) test --release -p drover-qemu-tests -- --test-threads=2

test: lint unit qemu-test

clean:
	$(CARGO) clean

# Single-node benchmark: import, and the agent's fetch → verify → inflate →
# write pipeline over loopback, beside cat/dd/curl baselines in the same run.
.PHONY: bench-single
bench-single:
	$(CARGO) build --release -p drover-server -p drover-agent
	bash bench/single.sh
