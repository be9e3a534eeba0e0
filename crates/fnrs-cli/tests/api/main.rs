//! Black-box tests of `fnrs serve` over real HTTP, on SQLite and PostgreSQL:
//! every rule and message of Fn's v2 API (contract §4.1–4.3), the requests of
//! Fn's own CLI, the OpenAPI document, durability, and the `fnrs` client.

mod common;

mod apps;
mod auth;
mod cli;
mod conn;
mod durability;
mod fncli;
mod fns;
mod general;
mod openapi;
mod pagination;
mod triggers;
