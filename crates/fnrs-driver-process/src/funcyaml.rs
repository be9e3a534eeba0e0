//! `func.yaml` as Fn's CLI writes it, and the command line it describes.

use std::path::Path;

use fnrs_driver::DriverError;
use serde::Deserialize;

/// The file name looked up in a function directory.
pub const FUNC_YAML: &str = "func.yaml";

/// The largest `func.yaml` read (1 MiB).
const MAX_FUNC_YAML: u64 = 1 << 20;

/// The fields of a `func.yaml` that the process driver uses; every other
/// field (`triggers`, `build_image`, …) is accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct FuncYaml {
    /// `name` of the function.
    #[serde(default)]
    pub name: Option<String>,
    /// `version` (a string such as `0.0.1`).
    #[serde(default)]
    pub version: Option<String>,
    /// `runtime` (`python`, `node`, …); informative only.
    #[serde(default)]
    pub runtime: Option<String>,
    /// The command that starts the function, e.g.
    /// `/python/bin/fdk /function/func.py handler` or `node func.js`.
    #[serde(default)]
    pub entrypoint: Option<String>,
    /// Arguments appended to the entrypoint (Docker's `CMD`), or the whole
    /// command when there is no entrypoint.
    #[serde(default)]
    pub cmd: Option<String>,
    /// The function format (`http-stream`, `default`, `http`, `json`,
    /// `cloudevent`). The fn record's `format` wins over this.
    #[serde(default)]
    pub format: Option<String>,
    /// `memory` in MB; informative only (the fn record's value is used).
    #[serde(default)]
    pub memory: Option<u64>,
}

impl FuncYaml {
    /// The argv to run: `entrypoint` split shell-like, then `cmd` split the
    /// same way. Quotes (`'…'`, `"…"`) and backslash escapes group words; no
    /// variable expansion, globbing or redirection happens. A plain string
    /// such as `node func.js` splits on whitespace, exactly as Fn's CLI turns
    /// it into an exec-form `ENTRYPOINT`.
    pub fn argv(&self) -> Result<Vec<String>, DriverError> {
        let mut argv = Vec::new();
        if let Some(ep) = &self.entrypoint {
            argv.extend(split_command(ep).map_err(|e| bad(format!("entrypoint: {e}")))?);
        }
        if let Some(cmd) = &self.cmd {
            argv.extend(split_command(cmd).map_err(|e| bad(format!("cmd: {e}")))?);
        }
        if argv.is_empty() {
            return Err(bad("no entrypoint (nor cmd) to run".to_string()));
        }
        Ok(argv)
    }
}

fn bad(msg: String) -> DriverError {
    DriverError::BadImage(format!("Invalid {FUNC_YAML}: {msg}"))
}

/// Read and parse `<dir>/func.yaml` (`dir` canonical), as `reader` (the
/// sandbox's uid/gid, when the server drops to one) could: no symlink on
/// the way (see [`crate::image::open_dir`]), only a regular file of at most
/// 1 MiB that `reader` may read, opened without blocking (a FIFO). Errors
/// are [`DriverError::BadImage`] naming the file, never showing its content.
pub fn read_func_yaml(dir: &Path, reader: Option<(u32, u32)>) -> Result<FuncYaml, DriverError> {
    let image = format!("file://{}", dir.display());
    let dir_fd = crate::image::open_dir(&image, dir, reader)?;
    read_func_yaml_at(&dir_fd, dir, reader)
}

/// [`read_func_yaml`] in a directory already opened (and checked).
pub(crate) fn read_func_yaml_at(
    dir_fd: &std::fs::File,
    dir: &Path,
    reader: Option<(u32, u32)>,
) -> Result<FuncYaml, DriverError> {
    use std::io::Read;
    let path = dir.join(FUNC_YAML);
    let cannot =
        |e: std::io::Error| DriverError::BadImage(format!("Cannot read {}: {e}", path.display()));
    let fd = nix::fcntl::openat(
        dir_fd,
        FUNC_YAML,
        nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_NONBLOCK
            | nix::fcntl::OFlag::O_NOCTTY
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ELOOP => DriverError::BadImage(format!(
            "{} is a symbolic link: it must be a regular file in the function's directory",
            path.display()
        )),
        e => cannot(std::io::Error::from(e)),
    })?;
    let file = std::fs::File::from(fd);
    let md = file.metadata().map_err(cannot)?;
    if !md.file_type().is_file() {
        return Err(DriverError::BadImage(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if let Some((uid, _)) = reader
        && !crate::image::allowed_fd(&file, reader, 0o4).map_err(cannot)?
    {
        return Err(DriverError::BadImage(format!(
            "{} is not readable by uid {uid}: {}",
            path.display(),
            crate::image::access_hint()
        )));
    }
    if md.len() > MAX_FUNC_YAML {
        return Err(too_large(&path));
    }
    // Bounded even if the file grows meanwhile.
    let mut buf = Vec::with_capacity(md.len() as usize);
    file.take(MAX_FUNC_YAML + 1)
        .read_to_end(&mut buf)
        .map_err(cannot)?;
    if buf.len() as u64 > MAX_FUNC_YAML {
        return Err(too_large(&path));
    }
    let text = String::from_utf8(buf)
        .map_err(|_| DriverError::BadImage(format!("{} is not UTF-8 text", path.display())))?;
    if text.trim().is_empty() {
        return Err(DriverError::BadImage(format!(
            "{} is empty",
            path.display()
        )));
    }
    // The parser's messages quote the input (snippets, offending values):
    // only the position is passed on.
    serde_saphyr::from_str::<FuncYaml>(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
            .unwrap_or_default();
        DriverError::BadImage(format!(
            "Invalid {}: not YAML or a field of the wrong type{at}",
            path.display()
        ))
    })
}

fn too_large(path: &Path) -> DriverError {
    DriverError::BadImage(format!(
        "{} is larger than {MAX_FUNC_YAML} bytes",
        path.display()
    ))
}

/// Split a command line into words like a POSIX shell does for a simple
/// command without expansions: whitespace separates words, single quotes
/// keep everything literally, double quotes keep everything but `\"`, `\\`
/// (and `\$`, `` \` ``), a backslash outside quotes escapes the next
/// character.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated double quote".to_string()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".to_string()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    cur.push(c);
                }
                None => return Err("trailing backslash".to_string()),
            },
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split_command("/python/bin/fdk /function/func.py handler").unwrap(),
            ["/python/bin/fdk", "/function/func.py", "handler"]
        );
        assert_eq!(
            split_command("  node   func.js ").unwrap(),
            ["node", "func.js"]
        );
        assert_eq!(
            split_command(r#"sh -c 'echo "a b"; exit 3' x"y z"\ w"#).unwrap(),
            ["sh", "-c", "echo \"a b\"; exit 3", "xy z w"]
        );
        assert_eq!(split_command(r#""a\"b" '' """#).unwrap(), ["a\"b", "", ""]);
        assert!(split_command("'open").is_err());
        assert!(split_command("\"open").is_err());
        assert!(split_command("x\\").is_err());
        assert!(split_command("   ").unwrap().is_empty());
    }

    #[test]
    fn parses_a_cli_func_yaml() {
        let y = "schema_version: 20180708\nname: hello\nversion: 0.0.1\nruntime: python\n\
                 build_image: fnproject/python:3.11-dev\nrun_image: fnproject/python:3.11\n\
                 entrypoint: /python/bin/fdk /function/func.py handler\nmemory: 256\n\
                 triggers:\n- name: hello\n  type: http\n  source: /hello\n";
        let f: FuncYaml = serde_saphyr::from_str(y).unwrap();
        assert_eq!(f.name.as_deref(), Some("hello"));
        assert_eq!(f.memory, Some(256));
        assert_eq!(f.format, None);
        assert_eq!(
            f.argv().unwrap(),
            ["/python/bin/fdk", "/function/func.py", "handler"]
        );
    }

    #[test]
    fn cmd_follows_entrypoint_or_stands_alone() {
        let f = FuncYaml {
            entrypoint: Some("./run".into()),
            cmd: Some("a 'b c'".into()),
            ..Default::default()
        };
        assert_eq!(f.argv().unwrap(), ["./run", "a", "b c"]);
        let f = FuncYaml {
            cmd: Some("./run x".into()),
            ..Default::default()
        };
        assert_eq!(f.argv().unwrap(), ["./run", "x"]);
        let err = FuncYaml::default().argv().unwrap_err();
        assert!(matches!(err, DriverError::BadImage(m) if m.contains("no entrypoint")));
    }

    /// Runs `f` on a thread; fails the test if it does not return within
    /// 20 s (a read that blocks on a FIFO never would).
    fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("reading func.yaml hung")
    }

    fn read(dir: &Path) -> Result<FuncYaml, DriverError> {
        let dir = dir.to_path_buf();
        bounded(move || read_func_yaml(&dir, None))
    }

    fn bad_image(r: Result<FuncYaml, DriverError>) -> String {
        match r {
            Err(DriverError::BadImage(m)) => m,
            other => panic!("expected BadImage, got {other:?}"),
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &dir.path().join(FUNC_YAML),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let m = bad_image(read(dir.path()));
        assert!(m.contains("not a regular file"), "{m}");
    }

    #[test]
    fn a_symlink_is_refused_even_to_a_device() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join(FUNC_YAML)).unwrap();
        let m = bad_image(read(dir.path()));
        assert!(m.contains("symbolic link"), "{m}");
    }

    #[test]
    fn content_is_never_echoed() {
        use std::os::unix::fs::PermissionsExt;
        // A world-readable secret in a directory only its owner may enter.
        let vault = tempfile::tempdir().unwrap();
        std::fs::set_permissions(vault.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let secret = vault.path().join("secret.txt");
        std::fs::write(&secret, "TOPSECRET-first-line\nTOPSECRET: second\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join(FUNC_YAML)).unwrap();
        let m = bad_image(read(dir.path()));
        assert!(!m.contains("TOPSECRET"), "{m}");
        // Nor the content of a regular func.yaml that does not parse.
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "TOPSECRET-first-line\n",
            "entrypoint: ./x\nmemory: TOPSECRET\n",
            "entrypoint: [TOPSECRET\n",
            "format: {TOPSECRET: 1}\n",
        ] {
            std::fs::write(dir.path().join(FUNC_YAML), text).unwrap();
            let m = bad_image(read(dir.path()));
            assert!(!m.contains("TOPSECRET"), "{text:?}: {m}");
            assert!(m.contains("line "), "{text:?}: the position helps: {m}");
        }
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join(FUNC_YAML)).unwrap();
        f.set_len(MAX_FUNC_YAML + 1).unwrap();
        let m = bad_image(read(dir.path()));
        assert!(m.contains("larger than"), "{m}");
        // Exactly at the bound is read (and then fails to parse: NULs).
        f.set_len(MAX_FUNC_YAML).unwrap();
        let m = bad_image(read(dir.path()));
        assert!(!m.contains("larger than"), "{m}");
    }

    #[test]
    fn read_reports_missing_and_invalid_files() {
        let dir = std::env::temp_dir().join(format!("fnrs-fy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = read_func_yaml(&dir, None).unwrap_err();
        assert!(
            matches!(&err, DriverError::BadImage(m) if m.contains("Cannot read")),
            "{err}"
        );
        std::fs::write(dir.join(FUNC_YAML), "entrypoint: [unclosed\n").unwrap();
        let err = read_func_yaml(&dir, None).unwrap_err();
        assert!(
            matches!(&err, DriverError::BadImage(m) if m.contains("Invalid")),
            "{err}"
        );
        std::fs::write(dir.join(FUNC_YAML), "format: default\nentrypoint: ./x\n").unwrap();
        let f = read_func_yaml(&dir, None).unwrap();
        assert_eq!(f.format.as_deref(), Some("default"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
