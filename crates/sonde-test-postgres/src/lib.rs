//! # A throwaway PostgreSQL server for tests
//!
//! [`Postgres::shared`] starts one PostgreSQL 15 server per test process (the
//! Debian package `postgresql-15`, binaries in `/usr/lib/postgresql/15/bin`
//! or `$SONDE_PG_BIN`) in a temporary directory, on 127.0.0.1 and a free
//! port, and [`Postgres::database`] gives each test a database of its own.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI does),
//! the server runs as the package's `postgres` user, or, if there is none,
//! as a system user `sonde-pg` created for it (`useradd --system`), through
//! `setpriv`; otherwise as the current user.
//!
//! The server stops and its directory is deleted when the test process
//! ends, however it ends: a shell watches the server's standard input, a
//! pipe only this process holds, and stops the server when it closes.

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the Debian package puts the server's binaries.
pub const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";
/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server; stops when the process ends.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    bin: PathBuf,
    dir: PathBuf,
    next: AtomicU32,
    _watch: ChildStdin,
    _shell: Child,
}

/// How the server trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync`, `synchronous_commit` and `full_page_writes` off: for tests.
    Fast,
    /// PostgreSQL's defaults (every commit flushed): for measurements.
    Durable,
}

impl Postgres {
    /// The server of this process, started on first use
    /// ([`Durability::Fast`]).
    pub fn shared() -> Result<&'static Postgres, String> {
        static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
        SHARED.get_or_init(|| Postgres::start(Durability::Fast)).as_ref().map_err(Clone::clone)
    }

    /// Starts a new server.
    pub fn start(durability: Durability) -> Result<Postgres, String> {
        let bin =
            std::env::var_os("SONDE_PG_BIN").map_or_else(|| DEFAULT_BIN.into(), PathBuf::from);
        if !bin.join("initdb").exists() {
            return Err(format!(
                "PostgreSQL 15 is not installed ({} has no initdb): `apt-get install \
                 postgresql-15` (`cargo xtask test` installs it), or set SONDE_PG_BIN",
                bin.display()
            ));
        }
        let user = RunAs::pick()?;
        let dir = tempfile::Builder::new()
            .prefix("sonde-pg-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?
            .keep();
        user.own(&dir)?;
        let data = dir.join("data");
        let out = user
            .command(&bin.join("initdb"))
            .args(["-D", path(&data)?, "-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--no-locale", "--no-sync", "--no-instructions"])
            .output()
            .map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let port = free_port()?;
        let mut server = user.command(&bin.join("postgres"));
        server.args(["-D", path(&data)?, "-k", path(&dir)?, "-h", "127.0.0.1"]);
        server.args(["-p", &port.to_string(), "-c", "max_connections=300"]);
        if durability == Durability::Fast {
            for setting in ["fsync=off", "synchronous_commit=off", "full_page_writes=off"] {
                server.args(["-c", setting]);
            }
        }
        // The watchdog: the server in the background, then wait for the
        // pipe from this process to close, then stop it and clean up.
        let mut line = vec![shell_quote(server.get_program().to_string_lossy().as_ref())];
        line.extend(server.get_args().map(|a| shell_quote(a.to_string_lossy().as_ref())));
        let script = format!(
            "{} >{log} 2>&1 </dev/null & pid=$!\ncat >/dev/null\nkill -INT $pid\nwait $pid\nrm -rf {dir}\n",
            line.join(" "),
            log = shell_quote(path(&dir.join("server.log"))?),
            dir = shell_quote(path(&dir)?),
        );
        let mut shell = Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the server: {e}"))?;
        let watch = shell.stdin.take().ok_or("no pipe to the server's shell")?;
        let pg = Postgres { port, bin, dir, next: AtomicU32::new(0), _watch: watch, _shell: shell };
        pg.wait_ready()?;
        Ok(pg)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` as the superuser `postgres`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new, empty database; its URL.
    pub fn database(&self) -> Result<String, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs `sql` in database `db` with `psql`; what it printed (unaligned,
    /// tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut child = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running psql: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes()).map_err(|e| format!("psql: {e}"))?;
        }
        let out = child.wait_with_output().map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(format!("psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn wait_ready(&self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            match self.psql("postgres", "SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > START_TIMEOUT => {
                    let log =
                        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                    return Err(format!("PostgreSQL did not start: {e}\n{log}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// Who runs the server.
enum RunAs {
    /// This process's user (not root).
    Me,
    /// A system user, from root.
    User { name: String, uid: u32, gid: u32 },
}

impl RunAs {
    fn pick() -> Result<RunAs, String> {
        let me = std::fs::metadata("/proc/self").map_err(|e| format!("/proc/self: {e}"))?.uid();
        if me != 0 {
            return Ok(RunAs::Me);
        }
        for name in ["postgres", "sonde-pg"] {
            if let Some((uid, gid)) = ids(name) {
                return Ok(RunAs::User { name: name.into(), uid, gid });
            }
        }
        // Several test processes may try at once: "exists" (9) is fine.
        let status = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "sonde-pg"])
            .status()
            .map_err(|e| format!("useradd: {e}"))?;
        let (uid, gid) = ids("sonde-pg")
            .ok_or_else(|| format!("cannot create the user `sonde-pg` ({status})"))?;
        Ok(RunAs::User { name: "sonde-pg".into(), uid, gid })
    }

    fn own(&self, dir: &Path) -> Result<(), String> {
        match self {
            RunAs::Me => Ok(()),
            RunAs::User { uid, gid, name } => std::os::unix::fs::chown(dir, Some(*uid), Some(*gid))
                .map_err(|e| format!("giving {} to {name}: {e}", dir.display())),
        }
    }

    fn command(&self, program: &Path) -> Command {
        match self {
            RunAs::Me => Command::new(program),
            RunAs::User { uid, gid, .. } => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".into(),
                ]);
                c.arg("--").arg(program);
                c
            }
        }
    }
}

/// A user's uid and gid, from `id`.
fn ids(name: &str) -> Option<(u32, u32)> {
    let get = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).stderr(Stdio::null()).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((get("-u")?, get("-g")?))
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn path(p: &Path) -> Result<&str, String> {
    p.to_str().ok_or_else(|| format!("not UTF-8: {}", p.display()))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_and_gives_each_caller_its_own_database() {
        let pg = Postgres::shared().expect("PostgreSQL starts");
        let a = pg.database().expect("a");
        let b = pg.database().expect("b");
        assert_ne!(a, b);
        let name = a.rsplit('/').next().expect("name");
        pg.psql(name, "CREATE TABLE t (x int); INSERT INTO t VALUES (41)").expect("write");
        assert_eq!(pg.psql(name, "SELECT x + 1 FROM t").expect("read"), "42");
        let version = pg.psql("postgres", "SHOW server_version_num").expect("version");
        assert!(version.starts_with("15"), "{version}");
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
