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

/// Read and parse `<dir>/func.yaml`. Errors are [`DriverError::BadImage`]
/// with a message naming the file.
pub fn read_func_yaml(dir: &Path) -> Result<FuncYaml, DriverError> {
    let path = dir.join(FUNC_YAML);
    if let Ok(md) = std::fs::metadata(&path)
        && md.len() > MAX_FUNC_YAML
    {
        return Err(DriverError::BadImage(format!(
            "{} is larger than {MAX_FUNC_YAML} bytes",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| DriverError::BadImage(format!("Cannot read {}: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Err(DriverError::BadImage(format!(
            "{} is empty",
            path.display()
        )));
    }
    serde_saphyr::from_str::<FuncYaml>(&text)
        .map_err(|e| DriverError::BadImage(format!("Invalid {}: {e}", path.display())))
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

    #[test]
    fn read_reports_missing_and_invalid_files() {
        let dir = std::env::temp_dir().join(format!("fnrs-fy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = read_func_yaml(&dir).unwrap_err();
        assert!(
            matches!(&err, DriverError::BadImage(m) if m.contains("Cannot read")),
            "{err}"
        );
        std::fs::write(dir.join(FUNC_YAML), "entrypoint: [unclosed\n").unwrap();
        let err = read_func_yaml(&dir).unwrap_err();
        assert!(
            matches!(&err, DriverError::BadImage(m) if m.contains("Invalid")),
            "{err}"
        );
        std::fs::write(dir.join(FUNC_YAML), "format: default\nentrypoint: ./x\n").unwrap();
        let f = read_func_yaml(&dir).unwrap();
        assert_eq!(f.format.as_deref(), Some("default"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
