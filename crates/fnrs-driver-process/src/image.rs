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
/// is accepted. A `:TAG` after the last component is ignored: Fn's CLI
/// wants every image to have one (a `:` in a directory's name is `%3A`).
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
    let rest = without_tag(rest);
    let decoded = percent_decode(rest).ok_or_else(|| bad(image, "bad percent-encoding"))?;
    if decoded.contains('\0') {
        return Err(bad(image, "NUL in path"));
    }
    Ok(PathBuf::from(decoded))
}

/// `path` without a Docker-style `:TAG` on its last component.
fn without_tag(path: &str) -> &str {
    let last = path.rsplit('/').next().unwrap_or(path);
    let Some((_, tag)) = last.rsplit_once(':') else {
        return path;
    };
    let is_tag = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if is_tag {
        &path[..path.len() - tag.len() - 1]
    } else {
        path
    }
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

const ACCESS_HINT: &str = "make it readable by the sandbox user (e.g. chmod o+rx on the directories, o+r on the files) or set FN_PROCESS_UID/FN_PROCESS_GID";

/// Open the canonical directory `dir` one component at a time from `/`,
/// never following a symlink (a component swapped for one since
/// `canonicalize` fails), and check on each opened directory that
/// `uid`/`gid` may search it, and list `dir` (when `reader` is given). The
/// answer holds for what was opened, not for whatever the path names later.
pub(crate) fn open_dir(
    image: &str,
    dir: &Path,
    reader: Option<(u32, u32)>,
) -> Result<std::fs::File, DriverError> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let open_err = |p: &Path, e: std::io::Error| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => bad(
            image,
            format_args!("{} changed into a symbolic link or a file", p.display()),
        ),
        _ => bad(image, format_args!("{}: {e}", p.display())),
    };
    let mut cur = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open("/")
        .map_err(|e| open_err(Path::new("/"), e))?;
    let mut at = PathBuf::from("/");
    for comp in dir.components() {
        let std::path::Component::Normal(name) = comp else {
            continue;
        };
        if let Some((uid, _)) = reader
            && !allowed_fd(&cur, reader, 0o1).map_err(|e| open_err(&at, e))?
        {
            return Err(bad(
                image,
                format_args!(
                    "directory {} is not searchable by uid {uid}: {ACCESS_HINT}",
                    at.display()
                ),
            ));
        }
        at.push(name);
        let next = nix::fcntl::openat(
            &cur,
            name,
            nix::fcntl::OFlag::from_bits_truncate(flags),
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| open_err(&at, std::io::Error::from(e)))?;
        cur = std::fs::File::from(next);
    }
    if let Some((uid, _)) = reader
        && !allowed_fd(&cur, reader, 0o5).map_err(|e| open_err(&at, e))?
    {
        return Err(bad(
            image,
            format_args!(
                "directory {} is not readable by uid {uid}: {ACCESS_HINT}",
                dir.display()
            ),
        ));
    }
    Ok(cur)
}

/// Whether `reader` may do `want` on the open file (always when `None`).
pub(crate) fn allowed_fd(
    f: &std::fs::File,
    reader: Option<(u32, u32)>,
    want: u32,
) -> std::io::Result<bool> {
    let Some((uid, gid)) = reader else {
        return Ok(true);
    };
    Ok(allowed(&f.metadata()?, uid, gid, want))
}

/// The hint for files the sandbox user cannot read.
pub(crate) fn access_hint() -> &'static str {
    ACCESS_HINT
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
        // The tag Fn's CLI insists on is ignored; an encoded colon is kept.
        assert_eq!(
            image_path("file:///a/b:0.0.1").unwrap(),
            PathBuf::from("/a/b")
        );
        assert_eq!(
            image_path("file:///a/b:latest").unwrap(),
            PathBuf::from("/a/b")
        );
        assert_eq!(
            image_path("file:///a/b%3Ac").unwrap(),
            PathBuf::from("/a/b:c")
        );
        assert_eq!(
            image_path("file:///a:1/b").unwrap(),
            PathBuf::from("/a:1/b")
        );
        assert_eq!(image_path("file:///a/b:").unwrap(), PathBuf::from("/a/b:"));
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
