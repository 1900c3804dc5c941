//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, `pg_ctl
//! start` on 127.0.0.1 and a free port, one fresh database per test ([`database`]).
//!
//! PostgreSQL refuses to run as root, and tests here often do: then every PostgreSQL program
//! runs as the `postgres` user (`runuser`), in a directory handed to it. The binaries come
//! from Debian's package (`/usr/lib/postgresql/VERSION/bin`, the newest installed; or
//! `HOOKRELAY_PG_BIN`). Without them a test fails, naming the package: the PostgreSQL tests
//! must run in CI, not be skipped there.
//!
//! A cluster stops when its [`Cluster`] is dropped. The one [`database`] shares across a test
//! binary lives in a static, which is never dropped: a watcher process stops it (and deletes
//! its directory) once the test binary has exited, however it exited.
//!
//! Uses no crate of ours, so relay-server's store tests compile this file too.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running cluster, stopped on drop.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    /// Holds `data/`, the log and the Unix socket.
    dir: PathBuf,
    port: u16,
    /// Whether the programs run as the `postgres` user (the tests run as root).
    as_postgres: bool,
    /// Server settings beyond the defaults below (`-c name=value ...`).
    settings: String,
}

/// The cluster [`database`] creates its databases in, started on first use.
static SHARED: OnceLock<Cluster> = OnceLock::new();

/// A fresh, empty database in this test binary's shared cluster, as a `postgres://` URL
/// (`sslmode=disable`: loopback).
pub fn database() -> String {
    SHARED.get_or_init(Cluster::start).database()
}

impl Cluster {
    /// Initialises and starts a cluster of its own (for a test that stops and restarts it).
    pub fn start() -> Cluster {
        Self::start_with(None)
    }

    /// [`Cluster::start`] with TLS on (`ssl=on`), serving certificate `cert_pem` with key
    /// `key_pem` (PEM text); plain connections are still accepted.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Cluster {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Cluster {
        let bin = bin_dir();
        let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let dir = tempfile::Builder::new()
            .prefix("hookrelay-pg-")
            .tempdir()
            .expect("create a temp dir for the cluster")
            .keep();
        let mut cluster = Cluster {
            bin,
            dir,
            port: free_port(),
            as_postgres,
            settings: String::new(),
        };
        let owner = as_postgres.then(|| (id("-u"), id("-g")));
        let give = |path: &Path| {
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .expect("hand the cluster's files to the postgres user");
            }
        };
        give(&cluster.dir);
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt as _;
            let (cert_path, key_path) = (
                cluster.dir.join("server.crt"),
                cluster.dir.join("server.key"),
            );
            std::fs::write(&cert_path, cert).expect("write the server certificate");
            std::fs::write(&key_path, key).expect("write the server key");
            // PostgreSQL refuses a key others can read.
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                .expect("restrict the server key");
            give(&cert_path);
            give(&key_path);
            cluster.settings = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_path.display(),
                key_path.display()
            );
        }
        watch(&cluster);
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        cluster.start_again();
        cluster
    }

    /// Starts the (stopped) cluster again on its port; returns once it accepts connections.
    pub fn start_again(&self) {
        // The tests kill servers, not machines: no fsync. Commits still reach the WAL before
        // they return (synchronous_commit stays on), so a commit survives [`Cluster::stop`].
        let options = format!(
            "-h 127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off \
             -c max_connections=300{}",
            self.port,
            self.dir.display(),
            self.settings
        );
        let log = self.dir.join("server.log");
        let log = log.to_str().expect("UTF-8 temp dir");
        let data = self.data();
        let args = [
            "-D", &data, "-l", log, "-w", "-t", "60", "-o", &options, "start",
        ];
        if !self.try_run("pg_ctl", &args) {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            panic!("the test PostgreSQL cluster did not start; its log:\n{log}");
        }
    }

    /// Stops the cluster at once (`pg_ctl stop -m immediate`): connections are cut, as when
    /// the database machine goes away.
    pub fn stop(&self) {
        let data = self.data();
        self.try_run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    /// Creates a fresh database and returns its URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", &name],
        );
        format!(
            "postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs PostgreSQL program `program`, as the `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn try_run(&self, program: &str, args: &[&str]) -> bool {
        self.command(program)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
            .success()
    }

    fn run(&self, program: &str, args: &[&str]) {
        assert!(self.try_run(program, args), "{program} {args:?} failed");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of the newest installed PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOOKRELAY_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").exists(),
            "HOOKRELAY_PG_BIN={} holds no initdb: point it at PostgreSQL's bin directory, or \
             unset it and install PostgreSQL with `apt-get install postgresql`",
            dir.display()
        );
        return dir;
    }
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no {}/VERSION/bin/initdb): the PostgreSQL store's \
             tests need it; install it with `apt-get install postgresql`, or point \
             HOOKRELAY_PG_BIN at its bin directory",
            root.display()
        ),
    }
}

/// The `postgres` user's id (`-u`) or group id (`-g`).
fn id(which: &str) -> u32 {
    let out = Command::new("id")
        .args([which, "postgres"])
        .output()
        .expect("run id");
    assert!(
        out.status.success(),
        "no postgres user: install PostgreSQL with `apt-get install postgresql`"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("id prints a number")
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}

/// Starts a watcher, in a session of its own (a Ctrl-C to the tests does not reach it),
/// that stops `cluster` and deletes its directory once this process has exited.
fn watch(cluster: &Cluster) {
    let stop = cluster.command("pg_ctl");
    let mut stop_line: Vec<String> = std::iter::once(stop.get_program())
        .chain(stop.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    stop_line.extend(["-D".to_owned(), cluster.data()]);
    stop_line.extend(["-m", "immediate", "stop"].map(str::to_owned));
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        stop = stop_line
            .iter()
            .map(|part| format!("'{part}'"))
            .collect::<Vec<_>>()
            .join(" "),
        dir = cluster.dir.display(),
    );
    // `setsid -f` forks the watcher off and exits, so there is no child left to wait for.
    let started = Command::new("setsid")
        .args(["-f", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start the cluster's watcher");
    assert!(
        started.success(),
        "setsid failed to start the cluster's watcher"
    );
}
