//! Arbitrary bytes, read as a program of datagrams, into one `Server`;
//! see tests/fuzz/harness.rs for the input format.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

/// Scratch space on tmpfs when there is one: every disk-log RESUME syncs.
fn scratch_base() -> PathBuf {
    if let Some(dir) = std::env::var_os("DMULOGD_FUZZ_DIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fuzz_target!(|data: &[u8]| {
    static HARNESS: OnceLock<harness::ServerHarness> = OnceLock::new();
    HARNESS
        .get_or_init(|| harness::ServerHarness::new(&scratch_base(), "dm-ulogd-fuzz"))
        .run(data);
});
