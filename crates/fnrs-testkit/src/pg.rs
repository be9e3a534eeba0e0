//! A throw-away PostgreSQL database for tests.
//!
//! [`TempPostgres::start`] (synchronous: it runs `psql`, `initdb` and `pg_ctl`
//! as child processes and blocks for up to a few seconds; from async code
//! call it in `tokio::task::spawn_blocking` or accept the short block):
//!
//! - if `FNRS_TEST_PG_URL` is set (`postgres://user@host:port/db?…`, a user
//!   allowed to create databases), makes a fresh database with a random name
//!   on that server and drops it (`WITH (FORCE)`) when the value is dropped,
//!   so tests can run in parallel against one server;
//! - otherwise starts a private cluster: `initdb` + `pg_ctl` in a temp dir, on
//!   127.0.0.1 and a free port, run as the `postgres` system user when the
//!   tests run as root; stopped and removed on drop.
//!
//! When neither works it returns an error saying what to install or set:
//! tests that need PostgreSQL must fail, not skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

/// The environment variable naming an existing server to create test
/// databases on.
pub const PG_URL_ENV: &str = "FNRS_TEST_PG_URL";

/// A PostgreSQL database that exists as long as this value.
#[derive(Debug)]
pub struct TempPostgres {
    /// `postgres://…?sslmode=disable` of the database, for `FN_DB_URL`.
    pub url: String,
    owner: Owner,
}

#[derive(Debug)]
enum Owner {
    /// A database on someone else's server: dropped on drop.
    Database { admin_url: String, name: String },
    /// A whole private cluster: stopped and deleted on drop.
    Cluster {
        pg_ctl: PathBuf,
        data: PathBuf,
        as_postgres: bool,
        // Last: removed after the server is stopped.
        _dir: tempfile::TempDir,
    },
}

impl TempPostgres {
    /// A fresh, empty database (see the module docs for where it lives).
    pub fn start() -> anyhow::Result<Self> {
        match std::env::var(PG_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Self::on_server(url.trim()),
            _ => Self::private_cluster(),
        }
    }

    /// A fresh database on the server behind `admin_url`.
    pub fn on_server(admin_url: &str) -> anyhow::Result<Self> {
        let name = unique_name();
        let mut url =
            reqwest::Url::parse(admin_url).with_context(|| format!("{PG_URL_ENV} is not a URL"))?;
        psql(admin_url, &format!("CREATE DATABASE \"{name}\""))
            .with_context(|| format!("creating test database on {}", redact(admin_url)))?;
        url.set_path(&format!("/{name}"));
        Ok(Self {
            url: url.to_string(),
            owner: Owner::Database {
                admin_url: admin_url.to_string(),
                name,
            },
        })
    }

    /// A private cluster of the PostgreSQL installed on this machine.
    pub fn private_cluster() -> anyhow::Result<Self> {
        let initdb = find_pg_bin("initdb").with_context(|| {
            format!(
                "no PostgreSQL for tests: set {PG_URL_ENV}=postgres://user@host:port/db or \
                 install PostgreSQL (apt-get install postgresql) so that initdb and pg_ctl exist"
            )
        })?;
        let bin = initdb.parent().map(Path::to_path_buf).unwrap_or_default();
        let pg_ctl = find_pg_bin("pg_ctl").unwrap_or_else(|_| bin.join("pg_ctl"));
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new().prefix("fnrs-pg-").tempdir()?;
        if as_postgres {
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path()))
            .context("giving the cluster dir to the postgres user")?;
        }
        let data = dir.path().join("data");
        watch_for_crash(&pg_ctl, &data, dir.path(), as_postgres);
        run(as_user(as_postgres, &initdb).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ]))
        .context("initdb")?;
        // A port picked free may be taken before the server binds it: retry.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off \
                 -c max_connections=200",
                dir.path().display()
            );
            let started = run(as_user(as_postgres, &pg_ctl)
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("log"))
                .args(["-w", "-t", "30", "-o", &opts, "start"]));
            match started {
                Ok(_) => {
                    return Ok(Self {
                        url: format!(
                            "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
                        ),
                        owner: Owner::Cluster {
                            pg_ctl,
                            data,
                            as_postgres,
                            _dir: dir,
                        },
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
            .with_context(|| format!("pg_ctl start failed; server log:\n{log}"))
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        match &self.owner {
            Owner::Database { admin_url, name } => {
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                if let Err(e) = psql(admin_url, &sql) {
                    eprintln!("fnrs-testkit: could not drop test database {name}: {e:#}");
                }
            }
            Owner::Cluster {
                pg_ctl,
                data,
                as_postgres,
                ..
            } => {
                let stopped = run(as_user(*as_postgres, pg_ctl).arg("-D").arg(data).args([
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ]));
                if let Err(e) = stopped {
                    eprintln!("fnrs-testkit: could not stop test PostgreSQL: {e:#}");
                }
            }
        }
    }
}

/// If this process dies without dropping the cluster (killed by a test
/// runner's timeout), a detached watchdog stops the server and removes its
/// directory (again a few times, in case an orphaned `initdb` was still
/// writing). After a normal drop it finds nothing left to do.
fn watch_for_crash(pg_ctl: &Path, data: &Path, dir: &Path, as_postgres: bool) {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let stop = format!(
        "{}{} -D {} -m immediate stop",
        if as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        },
        quote(pg_ctl),
        quote(data)
    );
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         for i in 1 2 3 4 5; do [ -d {dir} ] || break; {stop}; rm -rf {dir}; sleep 2; done",
        pid = std::process::id(),
        dir = quote(dir),
    );
    let spawned = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!("fnrs-testkit: no watchdog for the test PostgreSQL: {e}");
    }
}

fn unique_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "fnrs_test_{}_{:x}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with its password hidden.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let psql = find_pg_bin("psql").context("psql not found (install postgresql-client)")?;
    run(Command::new(psql).env("PGCONNECT_TIMEOUT", "10").args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        url,
        "-c",
        sql,
    ]))
    .map(|_| ())
}

/// A PostgreSQL program: from PATH, else the newest `/usr/lib/postgresql/*/bin`.
fn find_pg_bin(name: &str) -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in on_path {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin").join(name)))
        })
        .filter(|(_, p)| p.is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .with_context(|| format!("{name} not found in PATH or /usr/lib/postgresql/*/bin"))
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user of this process.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn as_user(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}{}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out)
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_safe() {
        let (a, b) = (unique_name(), unique_name());
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
    }
}
