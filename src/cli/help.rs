//! The text of `dm-ulogd --help`.

pub const HELP: &str = "\
dm-ulogd: a single-node server for device-mapper's userspace dirty log

Usage: dm-ulogd [options]
       dm-ulogd create NAME LEGS LOG [OPTIONS] [--save] [--wait] [--config PATH]
       dm-ulogd assemble NAME...|--all [--timeout SECONDS] [--wait] [--check] [--config PATH]
       dm-ulogd convert NAME --to kernel|userspace [--allow-resync] [--config PATH]
       dm-ulogd remove NAME...
       dm-ulogd status [--state-dir DIR] [--pidfile PATH] [--json] [--wait] [--config PATH]
       dm-ulogd examine DEVICE [--dirty] [--region-size SECTORS] [--node-dir DIR]

Serves the dirty-region logs of device-mapper mirrors whose table names a
`userspace` log (`mirror userspace <n> <uuid> [integrated_flush] <type> ...`),
with the semantics of the kernel's own logs. Log types: core, disk,
clustered-core, clustered-disk. Start it before loading such a table.

Options:
  -d, --daemon             detach; the parent exits 0 once the daemon listens,
                           or non-zero with its error. Logs go to /dev/kmsg.
      --pidfile PATH       pid file, locked while running (default /run/dm-ulogd.pid;
                           `none` for no pid file)
      --state-dir DIR      where each log's bits are kept so a restarted daemon
                           resumes them; keep it on tmpfs (default /run/dm-ulogd)
      --node-dir DIR       where a major:minor log device gets a short-lived device
                           node; must allow device nodes (default /dev)
      --max-logs N         most logs served at once, 1 to 65536 (default 256)
      --memory-budget SIZE most memory for all bitmaps together, with an optional
                           K, M, G or T suffix, 1K to 1T (default 64M); a log that
                           does not fit is refused with -ENOMEM
      --rcvbuf SIZE        netlink receive queue, 64K to 1G (default 4M)
      --no-mlock           do not lock memory (mlockall) or opt out of the OOM killer
      --root-storage       run as a root storage daemon: re-execute with argv[0]
                           \"@dm-ulogd\" so systemd spares it at switch_root and at
                           shutdown (use when started from an initramfs)
  -v, --verbose            more log output (-vv for every request); RUST_LOG overrides
  -h, --help               this text
  -V, --version            version and git revision

Mirrors (run beside the daemon, which must be running for create and assemble):
  create NAME LEGS LOG [OPTIONS]
                           makes the mirror /dev/mapper/NAME and prints its table;
                           the words of a line of the configuration file: LEGS two
                           to nine devices joined by commas (paths, /dev/disk/by-*
                           links, major:minor), LOG `core` or a device, OPTIONS `-`
                           or a comma list: region_size=SECTORS (default 1024),
                           integrated_flush, handle_errors, uneven_legs (legs of
                           different sizes: the smallest's length), uuid=LOG_UUID
                           (default dmulogd-NAME). Refused, with nothing left
                           behind, when the daemon is not running, the name is
                           taken, a device is mounted or held, the legs' sizes
                           differ or the log device is too small
      --save               also append the line to the configuration file
      --wait               show the resync's progress until the mirror is in sync
      --config PATH        the configuration file (default /etc/dm-ulogd/mirrors)
  assemble NAME...|--all   makes the configured mirrors that are not active (active
                           ones are left alone); waits for their devices; one line
                           per mirror; exit 1 if any failed
      --timeout SECONDS    how long to wait for devices, in all (default 30)
      --all                every mirror of the configuration file
      --check              only read the configuration: print each mirror's line,
                           or the file, line and rule of its first error
  convert NAME --to kernel|userspace
                           moves a live mirror's log between the kernel's own log
                           and dm-ulogd by a table reload on the same log device,
                           with no resync (disk logs)
      --allow-resync       also move a core log, whose bits are lost: full resync
  remove NAME...           removes mirrors that dm-ulogd made (uuid DMULOGD-NAME)

Rescue tools (read-only: they open everything O_RDONLY and write nothing):
  examine DEVICE           what a disk log device (a path or major:minor) records,
                           without the daemon or device-mapper: the header, the
                           device size and whether the image fits, clean and dirty
                           region counts; the kernel's disk logs and dm-ulogd's alike
      --dirty              also list the dirty regions as ranges
      --region-size N      the mirror's region size in sectors: also list the dirty
                           byte ranges of the mirror (what a load would resync)
      --node-dir DIR       where a major:minor device gets its short-lived node
                           (default /dev)
                           Not a dm disk log (wrong magic, too small, unreadable):
                           one line on stderr, exit code 1.
  status                   each live log of the daemon, from its state files: uuid,
                           type, regions, in sync, dirty, log device; and whether
                           the daemon runs (it holds the pid file's lock); then
                           each mirror dm-ulogd made or the configuration names:
                           regions in sync, log, log health (A, D, F), legs and
                           their health, whether it is in the configuration
      --state-dir DIR      the daemon's --state-dir (default /run/dm-ulogd)
      --pidfile PATH       the daemon's --pidfile (default /run/dm-ulogd.pid)
      --json               one JSON object per line per log, then per mirror
      --wait               then show the resync's progress until all are in sync
      --config PATH        the configuration file (default /etc/dm-ulogd/mirrors)

Signals: SIGTERM/SIGINT exit when no log is live (otherwise refused and logged:
exiting would freeze those mirrors); SIGUSR1 and SIGHUP log a summary of every
log (there is no configuration to reload). Every other signal that would stop
or kill the daemon is ignored (SIGQUIT, SIGUSR2, SIGALRM, ... are logged as
ignored); only SIGKILL and SIGSTOP, which cannot be caught, and real faults
(SIGSEGV, SIGBUS, ...) act.
Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 environment (privileges,
no netlink connector, another network namespace, an unsafe state directory),
4 another instance holds the pid file or the state directory.
";
