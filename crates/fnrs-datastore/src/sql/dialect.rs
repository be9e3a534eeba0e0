//! What every table's code shares: errors, column encodings, and the
//! statements whose text depends on the backend (multi-row inserts).

use fnrs_model::{DateTime, Error};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::Backend;
use crate::Result;

// ---------------------------------------------------------------- errors

/// Logs an unexpected database error and hides it behind a 500.
pub(super) fn internal(op: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| {
        tracing::error!(op, error = %e, "datastore query failed");
        Error::INTERNAL
    }
}

pub(super) fn is_unique(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(super) fn is_foreign_key(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

/// Maps a uniqueness violation to `conflict`, anything else to a 500.
pub(super) fn unique_or(op: &'static str, conflict: Error) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| {
        if is_unique(&e) {
            conflict
        } else {
            internal(op)(e)
        }
    }
}

pub(super) fn corrupt(op: &'static str, what: &str) -> Error {
    tracing::error!(op, what, "datastore row does not decode");
    Error::INTERNAL
}

// ---------------------------------------------------------------- encoding

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

pub(super) fn from_json<T: serde::de::DeserializeOwned + Default>(
    s: &str,
    op: &'static str,
) -> Result<T> {
    if s.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(s).map_err(|_| corrupt(op, "json"))
}

pub(super) fn time(row: &AnyRow, col: &str, op: &'static str) -> Result<DateTime> {
    let s: String = row.try_get(col).map_err(internal(op))?;
    s.parse().map_err(|_| corrupt(op, col))
}

pub(super) fn opt_time(row: &AnyRow, col: &str, op: &'static str) -> Result<Option<DateTime>> {
    let s: Option<String> = row.try_get(col).map_err(internal(op))?;
    s.map(|s| s.parse().map_err(|_| corrupt(op, col)))
        .transpose()
}

pub(super) fn text(row: &AnyRow, col: &str, op: &'static str) -> Result<String> {
    row.try_get(col).map_err(internal(op))
}

pub(super) fn opt_text(row: &AnyRow, col: &str, op: &'static str) -> Result<Option<String>> {
    row.try_get(col).map_err(internal(op))
}

pub(super) fn int(row: &AnyRow, col: &str, op: &'static str) -> Result<i64> {
    row.try_get(col).map_err(internal(op))
}

pub(super) fn limit(per_page: u32) -> i64 {
    if per_page == 0 {
        i64::MAX
    } else {
        per_page as i64
    }
}

/// Most rows written by one multi-row `INSERT` (15 parameters each for
/// calls: well under SQLite's and Postgres's limits).
pub(super) const ROWS_PER_INSERT: usize = 64;

/// How a batch of `n` rows is cut into multi-row statements: as many of
/// [`ROWS_PER_INSERT`] as fit, then the rest by powers of two (61 → 32, 16,
/// 8, 4, 1). Only 7 sizes, so each statement kind has at most 7 texts and
/// they all stay in the connection's prepared statement cache (sqlx keeps
/// 100 per connection; one text per batch size, 1 to 64, thrashed it).
pub(super) fn statement_sizes(n: usize) -> impl Iterator<Item = usize> {
    let full = n / ROWS_PER_INSERT;
    let rest = n % ROWS_PER_INSERT;
    std::iter::repeat_n(ROWS_PER_INSERT, full).chain(
        (0..usize::BITS)
            .rev()
            .map(|b| 1usize << b)
            .filter(move |&p| rest & p != 0),
    )
}

/// `head FROM (VALUES ($1, …, 0), …) AS v WHERE <the fn exists> tail`:
/// `rows` rows of `cols` parameters, numbered in order, and then the row's
/// index (column `cols + 1`, to keep the order with `ORDER BY`); the fn's id
/// is each row's second column. Rows of fns deleted meanwhile are skipped.
///
/// SQLite gets anonymous `?` parameters: sqlx looks every parameter up by
/// name, and SQLite's lookup of numbered names is linear in their number.
pub(super) fn multi_row_insert(
    backend: Backend,
    head: &str,
    cols: usize,
    rows: usize,
    tail: &str,
) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(head.len() + tail.len() + 96 + rows * cols * 6);
    sql.push_str(head);
    sql.push_str(" FROM (VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            sql.push_str(if c == 0 { "" } else { ", " });
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    let _ = write!(sql, "${}", r * cols + c + 1);
                }
            }
        }
        let _ = write!(sql, ", {r})");
    }
    sql.push_str(") AS v WHERE EXISTS (SELECT 1 FROM fns WHERE fns.id = v.column2)");
    sql.push_str(tail);
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_into_few_fixed_statement_sizes() {
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..=300 {
            let sizes: Vec<usize> = statement_sizes(n).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n, "{n}: {sizes:?}");
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{n}: {sizes:?}");
            // Full statements, then at most one of each smaller size.
            let rest = &sizes[n / ROWS_PER_INSERT..];
            assert!(rest.windows(2).all(|w| w[0] > w[1]), "{n}: {sizes:?}");
            seen.extend(sizes);
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 64]
        );
        assert_eq!(statement_sizes(61).collect::<Vec<_>>(), [32, 16, 8, 4, 1]);
        assert_eq!(statement_sizes(150).collect::<Vec<_>>(), [64, 64, 16, 4, 2]);
    }
}
