//! A data dir the server cannot use stops it at start-up with a message, not a panic. (The
//! crash and chaos tests, which need agents, are in e2e's `durability`.)

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::rng::Rng;

/// Runs the binary on `data_dir`, which must make it fail; returns its exit status and stderr.
fn run_expecting_failure(data_dir: &Path) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relay-server starts");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait on relay-server") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("relay-server kept running on an unusable data dir");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().expect("stderr reader not panicked"))
}

fn assert_clear_startup_error(status: ExitStatus, stderr: &str, dir: &Path, reason: &str) {
    assert!(!status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(
        status.code().is_some_and(|code| code != 0),
        "exited by a signal: {status}"
    );
    let expected = format!("cannot use data dir {}", dir.display());
    assert!(stderr.contains(&expected), "{expected:?} not in:\n{stderr}");
    assert!(stderr.contains(reason), "{reason:?} not in:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn corrupt_data_dir_fails_at_startup_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("events.db");
    let mut rng = Rng::new(0x5eed, 3);
    let garbage: Vec<u8> = (0..8192).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(&db, &garbage).expect("write garbage events.db");
    let (status, stderr) = run_expecting_failure(dir.path());
    assert_clear_startup_error(status, &stderr, dir.path(), "not a database");
    assert_eq!(
        std::fs::read(&db).expect("events.db still there"),
        garbage,
        "the server changed the corrupt file"
    );

    // A data dir that cannot be created: its parent is a regular file (which stops root too).
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let under_file = file.path().join("data");
    let (status, stderr) = run_expecting_failure(&under_file);
    assert_clear_startup_error(status, &stderr, &under_file, "create directory");
}
