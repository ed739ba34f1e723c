//! The PostgreSQL schema, as versioned migrations recorded in
//! `schema_migrations`. They are applied at start in one transaction that
//! first takes an advisory lock, so replicas starting together migrate once.

/// Migrations in order; `MIGRATIONS[n]` is version `n + 1`.
pub(super) const MIGRATIONS: [&str; 2] = [V1, V2];

/// The advisory lock key of migrations (any fixed number: "sonde" in ASCII).
pub(super) const MIGRATION_LOCK: i64 = 0x0073_6f6e_6465;
/// The advisory lock key of pruning.
pub(super) const PRUNE_LOCK: i64 = 0x0073_6f6e_6466;

/// Version 1: the same tables as SQLite's version 2, with native types
/// (UUIDs, `timestamptz`, `jsonb` for labels and histogram arrays), and
/// the rate-limit buckets the replicas share.
const V1: &str = "
CREATE TABLE reports (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    report_id       UUID NOT NULL UNIQUE,
    instance_id     UUID NOT NULL,
    timestamp       TEXT NOT NULL,            -- as the host wrote it
    received_at     TIMESTAMPTZ NOT NULL,
    started         TEXT,
    sonde_version   TEXT NOT NULL,
    os              TEXT NOT NULL,
    arch            TEXT NOT NULL,
    cpus            INTEGER NOT NULL,
    installation_id TEXT,
    events_recorded BIGINT NOT NULL,
    events_dropped  BIGINT NOT NULL,
    body            TEXT NOT NULL             -- the report's JSON as received
);
CREATE INDEX reports_by_instance ON reports (instance_id, received_at);
CREATE INDEX reports_by_time ON reports (received_at);

CREATE TABLE instances (
    instance_id UUID PRIMARY KEY,
    first_seen  TIMESTAMPTZ NOT NULL,
    last_seen   TIMESTAMPTZ NOT NULL,
    last_report BIGINT,                       -- id of its latest report
    reports     BIGINT NOT NULL
);
CREATE INDEX instances_by_last_report ON instances (last_report);
CREATE INDEX instances_by_last_seen ON instances (last_seen);

CREATE TABLE report_plugins (
    report            BIGINT NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    instance_id       UUID NOT NULL,
    received_at       TIMESTAMPTZ NOT NULL,
    plugin            TEXT NOT NULL,
    version           TEXT NOT NULL,
    state             TEXT NOT NULL,
    reason            TEXT,
    until             TEXT,
    last_failure      TEXT,
    events            BIGINT NOT NULL,
    calls             BIGINT NOT NULL,
    busy_us           BIGINT NOT NULL,
    failures          BIGINT NOT NULL,
    restarts          BIGINT NOT NULL,
    invalid_points    BIGINT NOT NULL,
    events_skipped    BIGINT NOT NULL,
    peak_memory_bytes BIGINT NOT NULL,
    d_events          BIGINT,
    d_calls           BIGINT,
    d_busy_us         BIGINT,
    d_failures        BIGINT
);
CREATE INDEX report_plugins_by_report ON report_plugins (report);
CREATE INDEX report_plugins_by_plugin ON report_plugins (plugin, received_at);

CREATE TABLE report_metrics (
    report      BIGINT NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    instance_id UUID NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    origin      TEXT NOT NULL,
    owner       TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    unit        TEXT NOT NULL,
    labels      JSONB NOT NULL,
    value       DOUBLE PRECISION,
    delta       DOUBLE PRECISION,
    count       BIGINT,
    sum         DOUBLE PRECISION,
    d_sum       DOUBLE PRECISION,
    bounds      JSONB,
    buckets     JSONB,
    fields      JSONB
);
CREATE INDEX report_metrics_by_report ON report_metrics (report);
CREATE INDEX report_metrics_by_name ON report_metrics (name, received_at);

CREATE TABLE directives (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id UUID,                         -- NULL: every instance
    body        TEXT NOT NULL,
    source      TEXT NOT NULL,                -- 'admin' | 'rule'
    created_at  TIMESTAMPTZ NOT NULL,
    action      TEXT NOT NULL,
    plugin      TEXT
);
CREATE INDEX directives_by_instance ON directives (instance_id);
CREATE INDEX directives_by_plugin ON directives (plugin);

CREATE TABLE deliveries (
    directive_id BIGINT NOT NULL REFERENCES directives (id) ON DELETE CASCADE,
    instance_id  UUID NOT NULL,
    report_id    UUID NOT NULL,
    delivered_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (directive_id, instance_id)
);
CREATE INDEX deliveries_by_report ON deliveries (instance_id, report_id);

CREATE TABLE rule_issues (
    instance_id   UUID NOT NULL,
    plugin        TEXT NOT NULL,
    directive_id  BIGINT NOT NULL,
    issued_at     BIGINT NOT NULL,            -- seconds since the epoch
    for_secs      BIGINT NOT NULL,
    seen_disabled BOOLEAN NOT NULL,
    PRIMARY KEY (instance_id, plugin)
);

CREATE TABLE rate_buckets (
    instance_id UUID PRIMARY KEY,
    tokens      DOUBLE PRECISION NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    taken       BOOLEAN NOT NULL              -- whether the last request got a token
);
";

/// Version 2: the fleet figures read a time window of plugin and metric
/// rows, newest first.
const V2: &str = "
CREATE INDEX report_plugins_by_time ON report_plugins (received_at);
CREATE INDEX report_metrics_by_time ON report_metrics (received_at);
";
