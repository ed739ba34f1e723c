//! The SQLite schema, as versioned migrations: the database's
//! `PRAGMA user_version` is the number applied. Each runs in its own
//! transaction at open.

/// Migrations in order; `MIGRATIONS[n]` takes version `n` to `n + 1`.
pub(super) const MIGRATIONS: [&str; 3] = [V1, V2, V3];

/// Version 1: reports as JSON blobs, instances, directives and deliveries.
/// (`IF NOT EXISTS`: the first collectors created it without a version.)
const V1: &str = "
CREATE TABLE IF NOT EXISTS reports (
    report_id   TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    timestamp   TEXT NOT NULL,          -- as the host wrote it
    received_at INTEGER NOT NULL,       -- ms since the epoch
    body        TEXT NOT NULL           -- the Report's JSON
);
CREATE INDEX IF NOT EXISTS reports_by_instance ON reports (instance_id, received_at);
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    last_report INTEGER NOT NULL,       -- row id of its latest report: orders ties
    reports     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_last_report ON instances (last_report);
CREATE TABLE IF NOT EXISTS directives (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT,                   -- NULL: every instance
    body        TEXT NOT NULL,          -- the Directive's JSON
    source      TEXT NOT NULL,          -- 'admin' | 'rule'
    created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS directives_by_instance ON directives (instance_id);
CREATE TABLE IF NOT EXISTS deliveries (
    directive_id INTEGER NOT NULL REFERENCES directives (id) ON DELETE CASCADE,
    instance_id  TEXT NOT NULL,
    report_id    TEXT NOT NULL,         -- first report of the upload answered
    delivered_at INTEGER NOT NULL,
    PRIMARY KEY (directive_id, instance_id)
);
CREATE INDEX IF NOT EXISTS deliveries_by_report ON deliveries (instance_id, report_id);
CREATE TABLE IF NOT EXISTS rule_issues (
    instance_id   TEXT NOT NULL,
    plugin        TEXT NOT NULL,
    directive_id  INTEGER NOT NULL,
    issued_at     INTEGER NOT NULL,     -- seconds since the epoch
    for_secs      INTEGER NOT NULL,
    seen_disabled INTEGER NOT NULL,
    PRIMARY KEY (instance_id, plugin)
);
";

/// Version 2: series stored for analysis. `reports` gets an integer key
/// (its old rowid, which `instances.last_report` holds) and the runtime
/// facts as columns, filled from the stored JSON; the plugin and metric
/// rows of the reports already stored are made in the same transaction
/// (`backfill`, in Rust).
const V2: &str = "
CREATE TABLE reports_v2 (
    id              INTEGER PRIMARY KEY,
    report_id       TEXT NOT NULL UNIQUE,
    instance_id     TEXT NOT NULL,
    timestamp       TEXT NOT NULL,
    received_at     INTEGER NOT NULL,
    started         TEXT,
    sonde_version   TEXT NOT NULL,
    os              TEXT NOT NULL,
    arch            TEXT NOT NULL,
    cpus            INTEGER NOT NULL,
    installation_id TEXT,
    events_recorded INTEGER NOT NULL,
    events_dropped  INTEGER NOT NULL,
    body            TEXT NOT NULL
);
INSERT INTO reports_v2
SELECT rowid, report_id, instance_id, timestamp, received_at,
       json_extract(body, '$.started'),
       COALESCE(json_extract(body, '$.host.sonde_version'), ''),
       COALESCE(json_extract(body, '$.host.os'), ''),
       COALESCE(json_extract(body, '$.host.arch'), ''),
       COALESCE(json_extract(body, '$.host.cpus'), 0),
       json_extract(body, '$.installation_id'),
       COALESCE(json_extract(body, '$.buffer.recorded'), 0),
       COALESCE(json_extract(body, '$.buffer.dropped'), 0),
       body
FROM reports;
DROP TABLE reports;
ALTER TABLE reports_v2 RENAME TO reports;
CREATE INDEX reports_by_instance ON reports (instance_id, received_at);
CREATE INDEX reports_by_time ON reports (received_at);

CREATE TABLE report_plugins (
    report            INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    instance_id       TEXT NOT NULL,
    received_at       INTEGER NOT NULL,
    plugin            TEXT NOT NULL,
    version           TEXT NOT NULL,
    state             TEXT NOT NULL,
    reason            TEXT,
    until             TEXT,
    last_failure      TEXT,
    events            INTEGER NOT NULL,   -- cumulative since the run started
    calls             INTEGER NOT NULL,
    busy_us           INTEGER NOT NULL,
    failures          INTEGER NOT NULL,
    restarts          INTEGER NOT NULL,
    invalid_points    INTEGER NOT NULL,
    events_skipped    INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    d_events          INTEGER,            -- over the interval; NULL: unknown
    d_calls           INTEGER,
    d_busy_us         INTEGER,
    d_failures        INTEGER
);
CREATE INDEX report_plugins_by_report ON report_plugins (report);
CREATE INDEX report_plugins_by_plugin ON report_plugins (plugin, received_at);

CREATE TABLE report_metrics (
    report      INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    instance_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    origin      TEXT NOT NULL,          -- 'plugin' | 'source'
    owner       TEXT NOT NULL,          -- the plugin's or source's name
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    unit        TEXT NOT NULL,
    labels      TEXT NOT NULL,          -- JSON object, keys sorted
    value       REAL,                   -- counter total, gauge level
    delta       REAL,                   -- counter: change; histogram: count's change
    count       INTEGER,
    sum         REAL,
    d_sum       REAL,
    bounds      TEXT,                   -- JSON array
    buckets     TEXT,                   -- JSON array
    fields      TEXT                    -- a value of an unknown shape, JSON
);
CREATE INDEX report_metrics_by_report ON report_metrics (report);
CREATE INDEX report_metrics_by_name ON report_metrics (name, received_at);

ALTER TABLE directives ADD COLUMN action TEXT NOT NULL DEFAULT '';
ALTER TABLE directives ADD COLUMN plugin TEXT;
UPDATE directives SET action = COALESCE(json_extract(body, '$.action'), ''),
                      plugin = json_extract(body, '$.plugin');
CREATE INDEX directives_by_plugin ON directives (plugin);
";

/// Version 3: the fleet figures read a time window of plugin and metric
/// rows, newest first.
const V3: &str = "
CREATE INDEX report_plugins_by_time ON report_plugins (received_at);
CREATE INDEX report_metrics_by_time ON report_metrics (received_at);
";
