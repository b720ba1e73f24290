//! A throw-away PostgreSQL cluster for tests: `initdb` in a temporary
//! directory, a server on a free loopback port, a fresh database per test,
//! and the server stopped when the test process ends.
//!
//! Debian's `postgresql` package puts its programs in
//! `/usr/lib/postgresql/<version>/bin` (not on `PATH`); they are looked up
//! there, newest version first, then on `PATH`. PostgreSQL refuses to run
//! as root, and CI runs as root: then the cluster belongs to `nobody` and
//! its programs run through `runuser`.
//!
//! The server is started by a small shell that holds a pipe from this
//! process: when the test process exits, however it exits, the pipe
//! closes and the shell stops the server (fast shutdown) and removes the
//! cluster's directory.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The user the cluster's superuser role is called.
pub const USER: &str = "tessera";

/// A running cluster. One per test process ([`Cluster::shared`]).
pub struct Cluster {
    pub port: u16,
    bin: PathBuf,
    /// Runs a cluster program as the cluster's owner.
    as_owner: Vec<String>,
    /// The shell that stops the server when this process exits.
    _keeper: Mutex<Child>,
    next_db: AtomicU64,
}

/// Why there is no cluster: said once, by every test that needs one.
pub type Unavailable = String;

impl Cluster {
    /// The process's cluster, started on first use.
    pub fn shared() -> Result<&'static Cluster, Unavailable> {
        static CLUSTER: OnceLock<Result<Cluster, Unavailable>> = OnceLock::new();
        CLUSTER.get_or_init(Cluster::start).as_ref().map_err(Clone::clone)
    }

    fn start() -> Result<Cluster, Unavailable> {
        let bin = bin_dir().ok_or_else(|| {
            "PostgreSQL's programs (initdb, pg_ctl, postgres) are not installed: apt-get install postgresql".to_string()
        })?;
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let as_owner: Vec<String> =
            if root { ["runuser", "-u", "nobody", "--"].map(String::from).to_vec() } else { Vec::new() };
        let dir = std::env::temp_dir().join(format!("tessera-pg-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if root {
            chown_nobody(&dir)?;
        }
        let data = dir.join("data");
        let run = |program: &str, args: &[&str]| -> Result<(), Unavailable> {
            let mut cmd = command(&as_owner, &bin.join(program));
            let out = cmd.args(args).output().map_err(|e| format!("{program}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("{program} failed: {}", String::from_utf8_lossy(&out.stderr)))
            }
        };
        let data_s = data.to_string_lossy().into_owned();
        run("initdb", &["-D", &data_s, "-U", USER, "--auth=trust", "--encoding=UTF8", "--locale=C", "-N"])?;
        let port = free_port()?;
        // The keeper: starts the server, waits for this process's end of
        // its stdin to close, then stops the server and removes the files.
        // (`pg_ctl stop`, not a signal to the child: under `runuser` the
        // child is runuser, which does not pass signals on.)
        let script = format!(
            "{owner} '{postgres}' -D '{data}' -p {port} -c listen_addresses=127.0.0.1 \
             -c unix_socket_directories='{dir}' -c fsync=on -c max_connections=200 \
             -c shared_buffers=32MB >'{dir}/log' 2>&1 & pid=$!; cat >/dev/null; \
             {owner} '{pg_ctl}' -D '{data}' -m fast -w stop >/dev/null 2>&1; wait $pid; rm -rf '{dir}'",
            owner = as_owner.join(" "),
            postgres = bin.join("postgres").display(),
            pg_ctl = bin.join("pg_ctl").display(),
            data = data.display(),
            dir = dir.display(),
        );
        let keeper = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting postgres: {e}"))?;
        let cluster = Cluster { port, bin, as_owner, _keeper: Mutex::new(keeper), next_db: AtomicU64::new(1) };
        // Ready when it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(cluster.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                return Err(format!("postgres did not start within 60 s: {log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(cluster)
    }

    /// A new, empty database; returns its URL (`postgres://tessera@127.0.0.1:PORT/NAME`).
    pub fn fresh_database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), self.next_db.fetch_add(1, Ordering::Relaxed));
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, &name])
            .output()
            .expect("running createdb");
        assert!(out.status.success(), "createdb: {}", String::from_utf8_lossy(&out.stderr));
        self.url(&name)
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` in database `name` through `psql` (for tests that look
    /// under the store, as they open a SQLite file directly).
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let mut child = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-d", name])
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running psql");
        child.stdin.take().expect("psql stdin").write_all(sql.as_bytes()).expect("writing to psql");
        let out = child.wait_with_output().expect("psql");
        assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs one of the cluster's programs as its owner.
    pub fn program(&self, name: &str) -> Command {
        command(&self.as_owner, &self.bin.join(name))
    }
}

fn command(as_owner: &[String], program: &Path) -> Command {
    match as_owner.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Where `initdb` and friends are: Debian's versioned directory (newest
/// first), else `PATH`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
    })
}

fn chown_nobody(dir: &Path) -> Result<(), Unavailable> {
    let status = Command::new("chown").args(["nobody:nogroup"]).arg(dir).status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => Err(format!("chown nobody {}", dir.display())),
    }
}

fn free_port() -> Result<u16, Unavailable> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
