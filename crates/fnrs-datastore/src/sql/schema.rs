//! The schema: migrations per backend, embedded and applied at connect.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::Backend;

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "call log inline",
        include_str!("../../migrations/sqlite/0002_call_log_inline.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "call log inline",
        include_str!("../../migrations/postgres/0002_call_log_inline.sql"),
    ),
];

pub(super) fn migrator(backend: Backend) -> Migrator {
    let list = match backend {
        Backend::Sqlite => SQLITE_MIGRATIONS,
        Backend::Postgres => POSTGRES_MIGRATIONS,
    };
    Migrator::with_migrations(
        list.iter()
            .map(|&(version, desc, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(desc),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(sql),
                    false,
                )
            })
            .collect(),
    )
}
