//! Fn's `FN_DB_URL` forms and what they mean to sqlx.

use std::path::PathBuf;

use crate::StoreError;

/// Where a [`crate::SqlStore`] keeps its data, parsed from `FN_DB_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// `sqlite3:///abs/path/fn.db` or `sqlite:///abs/path/fn.db` (a relative
    /// path after `://` is relative to the working directory, as in Fn). Any
    /// `?query` is ignored.
    Sqlite(PathBuf),
    /// `postgres://user:pass@host:port/db?sslmode=disable`; `postgresql://`
    /// and `pgx://` are accepted and normalised to `postgres://`.
    Postgres(String),
}

impl DbUrl {
    /// Parses Fn's `FN_DB_URL`.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(StoreError::BadUrl(format!(
                "{:?} has no scheme: use sqlite3:///path/fn.db or postgres://user:pass@host:port/db",
                redact(url)
            )));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite3" | "sqlite" => {
                let path = rest.split_once('?').map_or(rest, |(p, _)| p);
                if path.is_empty() {
                    return Err(StoreError::BadUrl(format!(
                        "{url:?} names no file: use sqlite3:///path/fn.db"
                    )));
                }
                Ok(Self::Sqlite(PathBuf::from(path)))
            }
            "postgres" | "postgresql" | "pgx" => {
                let normalised = format!("postgres://{rest}");
                url::Url::parse(&normalised)
                    .map_err(|e| StoreError::BadUrl(format!("{:?}: {e}", redact(url))))?;
                Ok(Self::Postgres(normalised))
            }
            other => Err(StoreError::BadUrl(format!(
                "unsupported database scheme {other:?} in {:?}: use sqlite3://, sqlite://, postgres:// or postgresql://",
                redact(url)
            ))),
        }
    }

    /// The URL to show in logs and errors (password replaced).
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite3://{}", p.display()),
            Self::Postgres(u) => redact(u),
        }
    }
}

/// `url` with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        // Unparseable: hide everything between "://" and the last '@'.
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
            _ => url.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_scheme() {
        assert_eq!(
            DbUrl::parse("sqlite3:///data/fn.db").unwrap(),
            DbUrl::Sqlite("/data/fn.db".into())
        );
        assert_eq!(
            DbUrl::parse("sqlite:///abs/path").unwrap(),
            DbUrl::Sqlite("/abs/path".into())
        );
        assert_eq!(
            DbUrl::parse("sqlite3://rel/fn.db?_busy_timeout=5000").unwrap(),
            DbUrl::Sqlite("rel/fn.db".into())
        );
        let pg = "postgres://u:p@127.0.0.1:5432/fn?sslmode=disable";
        assert_eq!(DbUrl::parse(pg).unwrap(), DbUrl::Postgres(pg.into()));
        assert_eq!(
            DbUrl::parse("postgresql://u:p@h:1/db").unwrap(),
            DbUrl::Postgres("postgres://u:p@h:1/db".into())
        );
        assert_eq!(
            DbUrl::parse("pgx://u@h/db").unwrap(),
            DbUrl::Postgres("postgres://u@h/db".into())
        );
    }

    #[test]
    fn rejects_bad_urls_clearly() {
        let e = DbUrl::parse("mysql://u:secret@tcp(h:3306)/fn").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("unsupported database scheme \"mysql\""),
            "{msg}"
        );
        assert!(!msg.contains("secret"), "{msg}");
        let msg = DbUrl::parse("/var/fn.db").unwrap_err().to_string();
        assert!(msg.contains("no scheme"), "{msg}");
        let msg = DbUrl::parse("sqlite3://").unwrap_err().to_string();
        assert!(msg.contains("names no file"), "{msg}");
    }

    #[test]
    fn redacts_passwords() {
        let u = DbUrl::parse("postgres://fn:hunter2@db:5432/fn").unwrap();
        assert_eq!(u.redacted(), "postgres://fn:***@db:5432/fn");
        assert_eq!(redact("postgres://fn@db/fn"), "postgres://fn@db/fn");
    }
}
