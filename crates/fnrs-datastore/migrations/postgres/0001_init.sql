-- fnrs schema v1 (PostgreSQL). Append-only: never edit an applied migration.
-- Ids and names use the "C" collation so that they sort by bytes, as on SQLite.
-- Every timestamp is RFC 3339 text with milliseconds (sorts as it reads);
-- config, annotations, stats and headers are JSON text.

CREATE TABLE apps (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    config      TEXT NOT NULL,
    annotations TEXT NOT NULL,
    syslog_url  TEXT,
    shape       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE fns (
    id           TEXT COLLATE "C" PRIMARY KEY,
    app_id       TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name         TEXT COLLATE "C" NOT NULL,
    image        TEXT NOT NULL,
    format       TEXT,
    memory       BIGINT NOT NULL,
    timeout      BIGINT NOT NULL,
    idle_timeout BIGINT NOT NULL,
    config       TEXT NOT NULL,
    annotations  TEXT NOT NULL,
    shape        TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (app_id, name)
);

CREATE TABLE triggers (
    id          TEXT COLLATE "C" PRIMARY KEY,
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    fn_id       TEXT NOT NULL REFERENCES fns (id) ON DELETE CASCADE,
    name        TEXT COLLATE "C" NOT NULL,
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
    id           TEXT COLLATE "C" PRIMARY KEY,
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
    http_status  BIGINT,
    error        TEXT,
    stats        TEXT NOT NULL
);
CREATE INDEX calls_fn_id ON calls (fn_id, id);

-- A call's log is the concatenation of its chunks in seq order (appends are inserts).
CREATE TABLE call_logs (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id TEXT COLLATE "C" NOT NULL,
    fn_id   TEXT NOT NULL REFERENCES fns (id) ON DELETE CASCADE,
    data    BYTEA NOT NULL
);
CREATE INDEX call_logs_call ON call_logs (call_id, seq);
CREATE INDEX call_logs_fn ON call_logs (fn_id);

CREATE TABLE pending_calls (
    call_id    TEXT COLLATE "C" PRIMARY KEY,
    fn_id      TEXT NOT NULL REFERENCES fns (id) ON DELETE CASCADE,
    trigger_id TEXT,
    method     TEXT NOT NULL,
    url        TEXT NOT NULL,
    headers    TEXT NOT NULL,
    body       BYTEA NOT NULL,
    attempts   BIGINT NOT NULL
);
CREATE INDEX pending_calls_fn ON pending_calls (fn_id);
