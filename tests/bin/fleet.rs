//! `sonde-reliability fleet`: the `sonde-collector` binary (release) under
//! load from many simulated instances, on SQLite, on PostgreSQL with one
//! replica, with two replicas (each request to either at random), and with
//! two replicas of which one is SIGKILLed a third of the way through (its
//! requests in flight are sent again to the other, as a load balancer
//! would). For each: requests per second, latency, and that nothing was
//! lost: every report sent is stored exactly once, and reports posted again
//! to the other replica are refused as duplicates.
//!
//! PostgreSQL 15 runs with its defaults (every commit flushed to disk),
//! started by `sonde-test-postgres` in a temporary directory.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sonde::Report;
use sonde_test_postgres::{Durability, Postgres};
use uuid::Uuid;

use super::{Conn, gzip, pct, sample_report};

const POLICY: &str = "[rate_limit]\nreports_per_minute = 60000\nburst = 10000\n";

/// A `sonde-collector` process; killed when dropped.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(bin: &Path, db: &str, policy: &Path) -> Result<Replica> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let child = Command::new(bin)
        .args(["--listen", &addr.to_string(), "--db", db, "--db-connections", "16"])
        .arg("--policy")
        .arg(policy)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Conn::open(addr).and_then(|mut c| c.get("/healthz")).map(|(s, _)| s).ok() != Some(200) {
        ensure!(Instant::now() < deadline, "{} did not start", bin.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Replica { child, addr })
}

/// What one simulated instance did.
#[derive(Default)]
struct Host {
    instance: Uuid,
    sent: Vec<Uuid>,
    /// (replica index, body) of its first accepted report.
    first: Option<(usize, Vec<u8>)>,
    latencies: Vec<u64>,
    /// Requests that failed (connection reset by a killed replica) and
    /// were sent again to the other.
    resent: usize,
    /// Of those, answered `accepted: 0`: the killed replica had stored it.
    resent_stored_before: usize,
}

/// One load run's figures.
struct Run {
    setup: String,
    requests: usize,
    secs: f64,
    lat: Vec<u64>,
    lost: usize,
    twice: usize,
    resent: usize,
    resent_stored_before: usize,
    dup_posts: usize,
    dup_accepted: u64,
    dup_stored: usize,
}

/// `instances` threads posting `reports` reports each to `replicas` at
/// random; with `kill`, the last replica is SIGKILLed once a third of the
/// requests are done.
fn load(
    setup: &str,
    replicas: &mut Vec<Replica>,
    template: &Report,
    instances: usize,
    reports: usize,
    kill: bool,
) -> Result<Run> {
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let alive: Arc<Vec<AtomicBool>> =
        Arc::new(addrs.iter().map(|_| AtomicBool::new(true)).collect());
    let done = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(instances + 1));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..instances {
        let (addrs, alive, done, barrier, template) =
            (addrs.clone(), alive.clone(), done.clone(), barrier.clone(), template.clone());
        handles.push(std::thread::spawn(move || -> Result<Host> {
            let mut host = Host { instance: Uuid::new_v4(), ..Host::default() };
            let mut conns: Vec<Option<Conn>> = addrs.iter().map(|_| None).collect();
            barrier.wait();
            for _ in 0..reports {
                let mut r = template.clone();
                r.instance_id = host.instance;
                r.report_id = Uuid::new_v4();
                host.sent.push(r.report_id);
                let body = gzip(
                    format!("{{\"reports\":[{}]}}", String::from_utf8(r.to_json())?).as_bytes(),
                );
                let t = Instant::now();
                let mut failed = false;
                loop {
                    let up: Vec<usize> =
                        (0..addrs.len()).filter(|&i| alive[i].load(SeqCst)).collect();
                    ensure!(!up.is_empty(), "no replica left");
                    let i = up[fastrand::usize(..up.len())];
                    let conn = match &mut conns[i] {
                        Some(c) => c,
                        slot => match Conn::open(addrs[i]) {
                            Ok(c) => slot.insert(c),
                            Err(_) => {
                                failed = true;
                                continue;
                            }
                        },
                    };
                    match conn.post(&body) {
                        Ok((200, text)) => {
                            let v: serde_json::Value = serde_json::from_str(&text)?;
                            let accepted = v["accepted"].as_u64();
                            if failed {
                                host.resent += 1;
                                host.resent_stored_before += usize::from(accepted == Some(0));
                            } else {
                                ensure!(
                                    accepted == Some(1),
                                    "a new report must be accepted: {text}"
                                );
                            }
                            if host.first.is_none() {
                                host.first = Some((i, body.clone()));
                            }
                            break;
                        }
                        Ok((code, text)) => bail!("unexpected {code}: {text}"),
                        Err(_) => {
                            // The replica went away mid-request: another one.
                            conns[i] = None;
                            failed = true;
                        }
                    }
                }
                host.latencies.push(t.elapsed().as_micros() as u64);
                done.fetch_add(1, SeqCst);
            }
            Ok(host)
        }));
    }
    barrier.wait();
    let total = instances * reports;
    if kill {
        while done.load(SeqCst) < total / 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let last = addrs.len() - 1;
        alive[last].store(false, SeqCst);
        let mut victim = replicas.pop().context("no replica to kill")?;
        victim.child.kill()?;
        victim.child.wait()?;
    }
    let mut hosts = Vec::new();
    for h in handles {
        hosts.push(h.join().map_err(|_| anyhow::anyhow!("a client panicked"))??);
    }
    let secs = started.elapsed().as_secs_f64();

    // Every report sent is stored, once, as the read API of a replica left
    // standing shows.
    let reader = replicas[0].addr;
    let mut conn = Conn::open(reader)?;
    let mut stored_ids = |instance: Uuid| -> Result<Vec<Uuid>> {
        let (code, text) = conn.get(&format!("/v1/instances/{instance}/reports?limit=1000"))?;
        ensure!(code == 200, "read API: {code} {text}");
        let reports: Vec<Report> = serde_json::from_str(&text)?;
        Ok(reports.iter().map(|r| r.report_id).collect())
    };
    let (mut lost, mut twice, mut before) = (0, 0, 0);
    for h in &hosts {
        let stored = stored_ids(h.instance)?;
        let unique: BTreeSet<Uuid> = stored.iter().copied().collect();
        twice += stored.len() - unique.len();
        let sent: BTreeSet<Uuid> = h.sent.iter().copied().collect();
        lost += sent.difference(&unique).count() + unique.difference(&sent).count();
        before += stored.len();
    }
    // Duplicates: first bodies posted again, to the other replica if any.
    let (mut dup_posts, mut dup_accepted) = (0, 0);
    for h in hosts.iter().take(100) {
        let Some((i, body)) = &h.first else { continue };
        let other = replicas.iter().map(|r| r.addr).find(|a| *a != addrs[*i]).unwrap_or(reader);
        let (code, text) = Conn::open(other)?.post(body)?;
        ensure!(code == 200, "duplicate answered {code}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text)?;
        dup_accepted += v["accepted"].as_u64().unwrap_or(1);
        dup_posts += 1;
    }
    let mut after = 0;
    for h in &hosts {
        after += stored_ids(h.instance)?.len();
    }
    let mut lat: Vec<u64> = hosts.iter().flat_map(|h| h.latencies.iter().copied()).collect();
    lat.sort_unstable();
    Ok(Run {
        setup: setup.to_string(),
        requests: lat.len(),
        secs,
        lat,
        lost,
        twice,
        resent: hosts.iter().map(|h| h.resent).sum(),
        resent_stored_before: hosts.iter().map(|h| h.resent_stored_before).sum(),
        dup_posts,
        dup_accepted,
        dup_stored: after - before,
    })
}

/// Runs the four set-ups and prints the table.
pub(crate) fn table(instances: usize, reports: usize) -> Result<()> {
    let bin = std::env::current_exe()?.with_file_name("sonde-collector");
    ensure!(bin.exists(), "{} is missing: build sonde-collector in release", bin.display());
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY)?;
    let template = sample_report()?;
    let pg = Postgres::start(Durability::Durable).map_err(anyhow::Error::msg)?;
    let version = pg.psql("postgres", "SHOW server_version").map_err(anyhow::Error::msg)?;
    let mut runs = Vec::new();

    let sqlite = dir.path().join("collector.db");
    let mut one = vec![spawn(&bin, sqlite.to_str().context("path")?, &policy)?];
    runs.push(load("SQLite, 1 process", &mut one, &template, instances, reports, false)?);
    drop(one);
    for (setup, n, kill) in [
        ("PostgreSQL, 1 replica", 1, false),
        ("PostgreSQL, 2 replicas", 2, false),
        ("PostgreSQL, 2 replicas, one SIGKILLed at 1/3", 2, true),
    ] {
        let url = pg.database().map_err(anyhow::Error::msg)?;
        let mut replicas = Vec::new();
        for _ in 0..n {
            replicas.push(spawn(&bin, &url, &policy)?);
        }
        runs.push(load(setup, &mut replicas, &template, instances, reports, kill)?);
    }

    println!(
        "{instances} simulated instances posting {reports} reports each (one per request, gzip, \
         {} bytes of JSON, three plugins' series), all at once on loopback, each request to a \
         replica at random, to the release `sonde-collector` binary (rate limit checked but not \
         reached). PostgreSQL {version} with its default durability (every commit flushed), \
         started by `sonde-test-postgres`; the machine's 2 cores are shared by the clients, the \
         collectors and the database (and other developers' work).\n",
        template.to_json().len()
    );
    println!(
        "| set-up | requests | requests/s | latency p50 / p99 / max | lost | stored twice | \
         duplicates re-posted / accepted / stored |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} in {:.1} s | {:.0} | {:.1} / {:.1} / {:.1} ms | {} | {} | {} / {} / {} |",
            r.setup,
            r.requests,
            r.secs,
            r.requests as f64 / r.secs,
            pct(&r.lat, 50.0) as f64 / 1000.0,
            pct(&r.lat, 99.0) as f64 / 1000.0,
            *r.lat.last().unwrap_or(&0) as f64 / 1000.0,
            r.lost,
            r.twice,
            r.dup_posts,
            r.dup_accepted,
            r.dup_stored
        );
    }
    let killed = runs.last().context("runs")?;
    println!(
        "\nThe SIGKILLed replica: {} requests failed with it and were sent again to the other \
         replica; {} of them had been stored before the kill (answered `accepted: 0`, stored \
         once), the others were stored then. Lost: {}.",
        killed.resent, killed.resent_stored_before, killed.lost
    );
    for r in &runs {
        ensure!(r.lost == 0 && r.twice == 0, "{}: reports lost or stored twice", r.setup);
        ensure!(r.dup_accepted == 0 && r.dup_stored == 0, "{}: a duplicate was stored", r.setup);
    }
    Ok(())
}
