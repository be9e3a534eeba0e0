//! Image references and registry credentials (contract §6).

use std::collections::HashMap;

use base64::Engine as _;
use bollard::auth::DockerCredentials;

/// The registries tried for images without an explicit registry.
const DEFAULT_REGISTRIES: [&str; 2] = ["hub.docker.com", "index.docker.io"];

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host (with port), when the first path segment names one.
    pub registry: Option<String>,
    /// The name without tag or digest, as given (`library/` not added).
    pub name: String,
    /// The tag, `latest` when neither tag nor digest is given.
    pub tag: Option<String>,
    /// `sha256:…` when the reference pins a digest.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parse `[registry/]path[:tag][@digest]`. The first segment is a
    /// registry if it contains `.` or `:` or is `localhost`. The error says
    /// what is wrong.
    pub fn parse(image: &str) -> Result<ImageRef, String> {
        if image.is_empty() {
            return Err("image reference is empty".into());
        }
        if image.len() > 255 * 2 {
            return Err("image reference is too long".into());
        }
        if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("image reference contains whitespace".into());
        }
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) => {
                let (algo, hex) = d
                    .split_once(':')
                    .ok_or_else(|| format!("invalid digest '{d}'"))?;
                if algo.is_empty()
                    || hex.len() < 32
                    || !hex.bytes().all(|b| b.is_ascii_hexdigit())
                    || !algo.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b)
                    })
                {
                    return Err(format!("invalid digest '{d}'"));
                }
                (r, Some(d.to_string()))
            }
            None => (image, None),
        };
        // The tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(format!("invalid tag '{t}'"));
            }
        }
        let mut segments: Vec<&str> = name.split('/').collect();
        let registry = if segments.len() > 1
            && (segments[0].contains('.')
                || segments[0].contains(':')
                || segments[0] == "localhost")
        {
            let r = segments.remove(0);
            let (host, port) = match r.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (r, None),
            };
            if host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.[]".contains(&b))
                || port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(format!("invalid registry '{r}'"));
            }
            Some(r.to_string())
        } else {
            None
        };
        for s in &segments {
            let ok = !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && s.as_bytes()[0].is_ascii_alphanumeric()
                && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric();
            if !ok {
                return Err(format!(
                    "invalid repository name '{name}' (lowercase letters, digits and . _ - separated by /)"
                ));
            }
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(ImageRef {
            registry,
            name: name.to_string(),
            tag,
            digest,
        })
    }

    /// What the engine's pull takes as `fromImage` and `tag`: the name, and
    /// the tag or else the digest.
    pub fn pull_params(&self) -> (String, String) {
        let tag = self
            .digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".to_string());
        (self.name.clone(), tag)
    }
}

/// One registry's credentials from a Docker config file.
#[derive(Clone)]
struct AuthEntry {
    /// The host names this entry matches: its host and parent domains.
    hosts: Vec<String>,
    creds: DockerCredentials,
}

/// Registry credentials in Docker's config format (`FN_DOCKER_AUTH` or
/// `~/.docker/config.json`).
#[derive(Clone, Default)]
pub struct RegistryAuth {
    entries: Vec<AuthEntry>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        let hosts: Vec<&str> = self
            .entries
            .iter()
            .filter_map(|e| e.hosts.first().map(String::as_str))
            .collect();
        f.debug_struct("RegistryAuth")
            .field("registries", &hosts)
            .finish()
    }
}

/// The host (with port) of a config key: a URL or a bare `host[:port][/path]`.
fn key_host(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    rest.split('/').next().unwrap_or("").to_ascii_lowercase()
}

/// A host and its parent domains with at least two labels (as Fn matches).
fn subdomains(host: &str) -> Vec<String> {
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() <= 2 {
        return vec![host.to_string()];
    }
    (0..=labels.len() - 2)
        .map(|i| labels[i..].join("."))
        .collect()
}

impl RegistryAuth {
    /// Parse Docker config JSON: `{"auths": {"<server>": {"auth": "base64(user:pass)"}}}`
    /// (also `username`/`password`/`identitytoken` fields). Entries that
    /// cannot be decoded are skipped; invalid JSON is an error.
    pub fn parse(json: &str) -> Result<RegistryAuth, String> {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            auths: HashMap<String, Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(default)]
            auth: Option<String>,
            #[serde(default)]
            username: Option<String>,
            #[serde(default)]
            password: Option<String>,
            #[serde(default)]
            identitytoken: Option<String>,
            #[serde(default)]
            serveraddress: Option<String>,
        }
        let file: File =
            serde_json::from_str(json).map_err(|e| format!("invalid Docker auth config: {e}"))?;
        let mut entries = Vec::new();
        for (key, e) in file.auths {
            let (mut user, mut pass) = (e.username, e.password);
            if let Some(a) = e.auth.filter(|a| !a.is_empty()) {
                let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(a.trim()) else {
                    tracing::warn!(registry = %key, "undecodable auth entry skipped");
                    continue;
                };
                let raw = String::from_utf8_lossy(&raw).into_owned();
                let Some((u, p)) = raw.split_once(':') else {
                    tracing::warn!(registry = %key, "auth entry without user:password skipped");
                    continue;
                };
                user = Some(u.to_string());
                pass = Some(p.to_string());
            }
            let server = e.serveraddress.unwrap_or_else(|| key.clone());
            let host = key_host(&server);
            if host.is_empty() {
                continue;
            }
            entries.push(AuthEntry {
                hosts: subdomains(&host),
                creds: DockerCredentials {
                    username: user,
                    password: pass,
                    identitytoken: e.identitytoken,
                    serveraddress: Some(server),
                    ..Default::default()
                },
            });
        }
        // Deterministic choice when several entries match.
        entries.sort_by(|a, b| a.hosts.first().cmp(&b.hosts.first()));
        Ok(RegistryAuth { entries })
    }

    /// Read `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`; none
    /// (or an unreadable one) is fine: no credentials.
    pub fn from_docker_config() -> RegistryAuth {
        let path = match std::env::var_os("DOCKER_CONFIG") {
            Some(d) => std::path::PathBuf::from(d).join("config.json"),
            None => match std::env::var_os("HOME") {
                Some(h) => std::path::PathBuf::from(h).join(".docker/config.json"),
                None => return RegistryAuth::default(),
            },
        };
        match std::fs::read_to_string(&path) {
            Ok(s) => RegistryAuth::parse(&s).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "Docker config ignored");
                RegistryAuth::default()
            }),
            Err(_) => RegistryAuth::default(),
        }
    }

    /// Whether no credentials are known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credentials for an image: an entry whose host or a parent domain
    /// is the image's registry; images without a registry use Docker Hub's.
    pub fn for_image(&self, image: &ImageRef) -> Option<DockerCredentials> {
        let wanted: Vec<String> = match &image.registry {
            Some(r) => vec![r.to_ascii_lowercase()],
            None => DEFAULT_REGISTRIES.iter().map(|s| s.to_string()).collect(),
        };
        wanted.iter().find_map(|w| {
            self.entries
                .iter()
                .find(|e| e.hosts.iter().any(|h| h == w))
                .map(|e| e.creds.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = ImageRef::parse("fnproject/hello").unwrap();
        assert_eq!(r.registry, None);
        assert_eq!(r.name, "fnproject/hello");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = ImageRef::parse("127.0.0.1:5000/a/b:1.2").unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.pull_params(), ("127.0.0.1:5000/a/b".into(), "1.2".into()));
        let r = ImageRef::parse("localhost/x").unwrap();
        assert_eq!(r.registry.as_deref(), Some("localhost"));
        let d = format!("busybox@sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&d).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.pull_params().1, format!("sha256:{}", "a".repeat(64)));
        for bad in [
            "",
            "Upper/x",
            "a b",
            "x:",
            "x:-y",
            "/x",
            "x//y",
            "reg.io:port/x",
            "x@sha256:zz",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn matches_registries_like_fn() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let json = serde_json::json!({"auths": {
            "https://reg.example.com": {"auth": b64("u1:p1")},
            "https://index.docker.io/v1/": {"auth": b64("hub:pw")},
            "127.0.0.1:5000": {"username": "u3", "password": "p3"},
        }})
        .to_string();
        let a = RegistryAuth::parse(&json).unwrap();
        let user = |img: &str| {
            a.for_image(&ImageRef::parse(img).unwrap())
                .and_then(|c| c.username)
        };
        assert_eq!(user("reg.example.com/x").as_deref(), Some("u1"));
        assert_eq!(
            user("example.com/x").as_deref(),
            Some("u1"),
            "parent domain"
        );
        assert_eq!(user("other.org/x"), None);
        assert_eq!(user("fnproject/hello").as_deref(), Some("hub"));
        assert_eq!(user("127.0.0.1:5000/x").as_deref(), Some("u3"));
        let c = a
            .for_image(&ImageRef::parse("reg.example.com/x").unwrap())
            .unwrap();
        assert_eq!(c.password.as_deref(), Some("p1"));
        assert!(RegistryAuth::parse("{not json").is_err());
        assert!(format!("{a:?}").find("p1").is_none(), "no secrets in Debug");
    }
}
