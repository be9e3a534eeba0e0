-- fnrs schema v1 (SQLite). Append-only: never edit an applied migration.
-- Every timestamp is RFC 3339 text with milliseconds (sorts as it reads);
-- config, annotations, stats and headers are JSON text.

CREATE TABLE apps (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    config      TEXT NOT NULL,
    annotations TEXT NOT NULL,
    syslog_url  TEXT,
    shape       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE fns (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    image        TEXT NOT NULL,
    format       TEXT,
    memory       INTEGER NOT NULL,
    timeout      INTEGER NOT NULL,
    idle_timeout INTEGER NOT NULL,
    config       TEXT NOT NULL,
    annotations  TEXT NOT NULL,
    shape        TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (app_id, name)
);

CREATE TABLE triggers (
    id          TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    fn_id       TEXT NOT NULL REFERENCES fns (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    type        TEXT NOT NULL,
    source      TEXT NOT NULL,
    annotations TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (app_id, type, source),
    UNIQUE (app_id, fn_id, name)
);
CREATE INDEX triggers_fn ON triggers (fn_id);
CREATE INDEX triggers_app_name ON triggers (app_id, name);

CREATE TABLE calls (
    id           TEXT PRIMARY KEY,
    fn_id        TEXT NOT NULL REFERENCES fns (id) ON DELETE CASCADE,
    app_id       TEXT NOT NULL,
    trigger_id   TEXT,
    status       TEXT NOT NULL,
    type         TEXT NOT NULL,
    method       TEXT NOT NULL,
    url          TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    completed_at TEXT,
    http_status  INTEGER,
    error        TEXT,
    stats        TEXT NOT NULL
);
CREATE INDEX calls_fn_id ON calls (fn_id, id);

-- A call's log is the concatenation of its chunks in seq order (appends are inserts).
CREATE TABLE call_logs (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    fn_id   TEXT NOT NULL REFERENCES fns (id) ON DELETE CASCADE,
    data    BLOB NOT NULL
);
CREATE INDEX call_logs_call ON call_logs (call_id, seq);
CREATE INDEX call_logs_fn ON call_logs (fn_id);

CREATE TABLE pending_calls (
    call_id    TEXT PRIMARY KEY,
    fn_id      TEXT NOT NULL REFERENCES fns (id) ON DELETE CASCADE,
    trigger_id TEXT,
    method     TEXT NOT NULL,
    url        TEXT NOT NULL,
    headers    TEXT NOT NULL,
    body       BLOB NOT NULL,
    attempts   INTEGER NOT NULL
);
CREATE INDEX pending_calls_fn ON pending_calls (fn_id);
