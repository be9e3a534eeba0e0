//! `file://<absolute directory>` images: parsing, allowed roots, access by
//! the sandbox user.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fnrs_driver::DriverError;

/// The scheme prefix of images this driver runs.
pub const FILE_SCHEME: &str = "file://";

fn bad(image: &str, why: impl std::fmt::Display) -> DriverError {
    DriverError::BadImage(format!("Invalid image {image:?}: {why}"))
}

/// The directory named by a `file://` image, percent-decoded, not yet
/// resolved. Only `file:///abs/path` (empty host) or `file://localhost/abs`
/// is accepted.
pub fn image_path(image: &str) -> Result<PathBuf, DriverError> {
    let rest = image
        .strip_prefix(FILE_SCHEME)
        .ok_or_else(|| bad(image, "a process image must start with file://"))?;
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    if !rest.starts_with('/') {
        return Err(bad(
            image,
            "the path must be absolute, as in file:///path/to/function",
        ));
    }
    if rest.contains(['?', '#']) {
        return Err(bad(image, "query and fragment are not allowed"));
    }
    let decoded = percent_decode(rest).ok_or_else(|| bad(image, "bad percent-encoding"))?;
    if decoded.contains('\0') {
        return Err(bad(image, "NUL in path"));
    }
    Ok(PathBuf::from(decoded))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Resolve a `file://` image to its canonical directory, checking that it
/// exists, is a directory and lies under one of `roots` (already
/// canonical; empty = any directory).
pub fn resolve_image(image: &str, roots: &[PathBuf]) -> Result<PathBuf, DriverError> {
    let path = image_path(image)?;
    let dir = std::fs::canonicalize(&path)
        .map_err(|e| bad(image, format_args!("{}: {e}", path.display())))?;
    if !dir.is_dir() {
        return Err(bad(
            image,
            format_args!("{} is not a directory", dir.display()),
        ));
    }
    if !roots.is_empty() && !roots.iter().any(|r| dir.starts_with(r)) {
        let list: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(bad(
            image,
            format_args!(
                "{} is not under an allowed root (FN_PROCESS_ROOTS: {})",
                dir.display(),
                list.join(":")
            ),
        ));
    }
    Ok(dir)
}

/// Whether `uid`/`gid` (no supplementary groups) may do `want` (bits of
/// `0o4` read, `0o1` exec) on a file with this metadata.
fn allowed(md: &std::fs::Metadata, uid: u32, gid: u32, want: u32) -> bool {
    let mode = md.mode();
    let bits = if md.uid() == uid {
        (mode >> 6) & 7
    } else if md.gid() == gid {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    bits & want == want
}

/// Why `uid`/`gid` cannot reach and read `path` (every ancestor
/// searchable; a directory readable and searchable, a file readable), if so.
pub(crate) fn access_problem(path: &Path, uid: u32, gid: u32) -> Option<String> {
    for anc in path.ancestors().skip(1) {
        match std::fs::metadata(anc) {
            Ok(md) if allowed(&md, uid, gid, 0o1) => {}
            Ok(_) => return Some(format!("{} is not searchable by uid {uid}", anc.display())),
            Err(e) => return Some(format!("{}: {e}", anc.display())),
        }
    }
    match std::fs::metadata(path) {
        Ok(md) if md.is_dir() && !allowed(&md, uid, gid, 0o5) => {
            Some(format!("{} is not readable by uid {uid}", path.display()))
        }
        Ok(md) if !md.is_dir() && !allowed(&md, uid, gid, 0o4) => {
            Some(format!("{} is not readable by uid {uid}", path.display()))
        }
        Ok(_) => None,
        Err(e) => Some(format!("{}: {e}", path.display())),
    }
}

/// Check that `uid`/`gid` can reach and list `dir` and read its
/// `func.yaml`: every ancestor searchable, the directory readable and
/// searchable. Gives the operator a clear message instead of a function that
/// fails inside the sandbox.
pub fn check_access(image: &str, dir: &Path, uid: u32, gid: u32) -> Result<(), DriverError> {
    let hint = "make it readable by the sandbox user (e.g. chmod o+rx on the directories, o+r on the files) or set FN_PROCESS_UID/FN_PROCESS_GID";
    for anc in dir.ancestors().skip(1) {
        let md = std::fs::metadata(anc).map_err(|e| bad(image, e))?;
        if !allowed(&md, uid, gid, 0o1) {
            return Err(bad(
                image,
                format_args!(
                    "directory {} is not searchable by uid {uid}: {hint}",
                    anc.display()
                ),
            ));
        }
    }
    let md = std::fs::metadata(dir).map_err(|e| bad(image, e))?;
    if !allowed(&md, uid, gid, 0o5) {
        return Err(bad(
            image,
            format_args!(
                "directory {} is not readable by uid {uid}: {hint}",
                dir.display()
            ),
        ));
    }
    let fy = dir.join(crate::funcyaml::FUNC_YAML);
    if let Ok(md) = std::fs::metadata(&fy)
        && !allowed(&md, uid, gid, 0o4)
    {
        return Err(bad(
            image,
            format_args!("{} is not readable by uid {uid}: {hint}", fy.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_urls() {
        assert_eq!(image_path("file:///a/b").unwrap(), PathBuf::from("/a/b"));
        assert_eq!(
            image_path("file://localhost/a%20b").unwrap(),
            PathBuf::from("/a b")
        );
        for bad in [
            "file://a/b",
            "file://relative",
            "/abs",
            "docker.io/x:1",
            "file:///a%2",
            "file:///a%zz",
            "file:///a?x=1",
            "file:///a%00b",
        ] {
            let e = image_path(bad).unwrap_err();
            assert!(matches!(e, DriverError::BadImage(_)), "{bad}");
        }
    }
}
