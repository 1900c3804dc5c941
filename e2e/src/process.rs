//! Child processes: finding our binaries, signalling them, waiting for their exit.
//!
//! Uses none of our crates, so relay-server's and relay-client's own tests compile this file
//! too (see the crate docs).

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use super::requests::DEADLINE;

/// The path of our binary `name`: `built` where Cargo says where it is (it does so, as
/// `CARGO_BIN_EXE_<name>`, only to the tests of the package that has the binary), else
/// `name` in the directory above the test binary's `deps/`, where `cargo build` and
/// `cargo test --workspace` leave it.
///
/// Panics when it is not there, saying how to build it: a test that cannot run the binary
/// fails instead of passing without having run.
pub fn binary(name: &str, built: Option<&'static str>) -> PathBuf {
    if let Some(path) = built {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's own path");
    let dir = exe
        .parent()
        .filter(|dir| dir.ends_with("deps"))
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("{} is not in a Cargo deps/ directory", exe.display()));
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "the {name} binary is not at {}: run the tests with `cargo test --workspace`, or \
         `cargo build -p {name}` first",
        path.display()
    );
    path
}

/// Sends `signal` (`TERM`, `HUP`, ...) to `child` with kill(1).
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits for `child` to exit; panics after [`DEADLINE`].
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit in time"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends SIGTERM and waits for the exit.
pub fn terminate(child: &mut Child) -> ExitStatus {
    signal(child, "TERM");
    wait_exit(child)
}
