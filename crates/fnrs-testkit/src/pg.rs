//! A throw-away PostgreSQL cluster on 127.0.0.1 for tests.
