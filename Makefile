# dm-ulogd: build with cargo, install as a system daemon.
#
#   make                          cargo build --release
#   make install [DESTDIR=...] [PREFIX=/usr] [SBINDIR=...] [MANDIR=...]
#                [SYSTEMDUNITDIR=...] [INITRAMFSTOOLSDIR=...] [DRACUTMODULESDIR=...]
#   make uninstall                the same variables; removes what install put
#   make deb                      the Debian package (initramfs/debian/build-deb.sh)
#
# install copies the release binary that `cargo build --release` made
# (BIN; built first only when missing: run `make` as your user, then
# `make install` as root). The initramfs-tools and dracut directories do not
# follow PREFIX: those tools look only where their own conventions say.
# With an SBINDIR other than /usr/sbin, the host unit, the initramfs-tools
# hook and the dracut module are rewritten to find the daemon there.

CARGO ?= cargo
TARGET ?= x86_64-unknown-linux-musl
CARGO_TARGET_DIR ?= target
BIN ?= $(CARGO_TARGET_DIR)/$(TARGET)/release/dm-ulogd

PREFIX ?= /usr
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
# systemd's own answer (/lib/systemd/system on Debian 12), else the upstream
# default.
ifeq ($(origin SYSTEMDUNITDIR),undefined)
SYSTEMDUNITDIR := $(or $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null),/usr/lib/systemd/system)
endif
INITRAMFSTOOLSDIR ?= /usr/share/initramfs-tools
DRACUTMODULESDIR ?= /usr/lib/dracut/modules.d

INSTALL ?= install
SRC := initramfs

# Installed path -> source, mode.
FILES := \
	$(SBINDIR)/dm-ulogd:$(BIN):755 \
	$(MANDIR)/man8/dm-ulogd.8:$(SRC)/man/dm-ulogd.8:644 \
	$(SYSTEMDUNITDIR)/dm-ulogd.service:$(SRC)/systemd/dm-ulogd.service:644 \
	$(SYSTEMDUNITDIR)/dm-ulogd-assemble.service:$(SRC)/systemd/dm-ulogd-assemble.service:644 \
	$(INITRAMFSTOOLSDIR)/hooks/dm-ulogd:$(SRC)/initramfs-tools/hooks/dm-ulogd:755 \
	$(INITRAMFSTOOLSDIR)/scripts/init-top/dm-ulogd:$(SRC)/initramfs-tools/scripts/init-top/dm-ulogd:755 \
	$(INITRAMFSTOOLSDIR)/scripts/local-top/dm-ulogd:$(SRC)/initramfs-tools/scripts/local-top/dm-ulogd:755 \
	$(DRACUTMODULESDIR)/90dm-ulogd/module-setup.sh:$(SRC)/dracut/90dm-ulogd/module-setup.sh:755 \
	$(DRACUTMODULESDIR)/90dm-ulogd/dm-ulogd-initrd.service:$(SRC)/dracut/90dm-ulogd/dm-ulogd-initrd.service:644 \
	$(DRACUTMODULESDIR)/90dm-ulogd/dm-ulogd-assemble.service:$(SRC)/systemd/dm-ulogd-assemble.service:644

# Where the host-side files name the daemon's installed path (the initrd
# unit names the path inside the image, which never changes).
REWRITE := sed -e 's|^ExecStart=/usr/sbin/dm-ulogd$$|ExecStart=$(SBINDIR)/dm-ulogd|' \
	-e 's|^ExecStart=/usr/sbin/dm-ulogd assemble |ExecStart=$(SBINDIR)/dm-ulogd assemble |' \
	-e 's|$${DM_ULOGD:-/usr/sbin/dm-ulogd}|$${DM_ULOGD:-$(SBINDIR)/dm-ulogd}|g' \
	-e 's|^\.I /usr/sbin/dm-ulogd$$|.I $(SBINDIR)/dm-ulogd|'

.PHONY: all install uninstall deb

all:
	$(CARGO) build --release --target $(TARGET)

$(BIN):
	$(CARGO) build --release --target $(TARGET)

install: $(BIN)
	@set -e; for f in $(FILES); do \
		dst=$${f%%:*}; rest=$${f#*:}; src=$${rest%:*}; mode=$${rest##*:}; \
		echo "install -m $$mode $$src $(DESTDIR)$$dst"; \
		$(INSTALL) -d -m 755 "$(DESTDIR)$${dst%/*}"; \
		case $$src in \
		$(BIN)) $(INSTALL) -m $$mode "$$src" "$(DESTDIR)$$dst" ;; \
		*) $(REWRITE) "$$src" >"$(DESTDIR)$$dst.tmp"; \
		   chmod $$mode "$(DESTDIR)$$dst.tmp"; \
		   mv -f "$(DESTDIR)$$dst.tmp" "$(DESTDIR)$$dst" ;; \
		esac; \
	done

# Removes the files, and the dracut module's own directory. Under a DESTDIR
# (a staging tree) it also removes the directories left empty, up to
# DESTDIR itself; on the live system it leaves /usr/sbin and the like alone.
uninstall:
	@set -e; for f in $(FILES); do \
		dst=$${f%%:*}; \
		echo "rm -f $(DESTDIR)$$dst"; rm -f "$(DESTDIR)$$dst"; \
	done
	@set -e; if [ -n "$(DESTDIR)" ] && [ -d "$(DESTDIR)" ]; then \
		cd "$(DESTDIR)"; \
		for f in $(FILES); do \
			dir=$${f%%:*}; dir=$${dir%/*}; dir=$${dir#/}; \
			[ -d "$$dir" ] && rmdir -p --ignore-fail-on-non-empty "$$dir"; \
		done; \
	fi; true
	@[ ! -d "$(DESTDIR)$(DRACUTMODULESDIR)/90dm-ulogd" ] || \
		rmdir --ignore-fail-on-non-empty "$(DESTDIR)$(DRACUTMODULESDIR)/90dm-ulogd"

deb: $(BIN)
	sh $(SRC)/debian/build-deb.sh
