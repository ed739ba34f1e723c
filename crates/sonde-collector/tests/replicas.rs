//! Two `sonde-collector` processes (the real binary) on one PostgreSQL
//! database, simulated hosts posting to either at random: every report is
//! stored once, duplicates re-sent to the other replica are refused, every
//! directive reaches each instance once, the cost rule fires once per
//! instance, and the rate limit holds across both.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use sonde_core::{
    BufferStats, Directive, EndpointResponse, PluginCost, PluginReport, PluginState, Report,
    ReportBatch,
};
use sonde_test_postgres::Postgres;
use uuid::Uuid;

/// Hosts posting at once, and uploads each makes (a pricey host two more).
const HOSTS: usize = 24;
const UPLOADS: usize = 8;
/// The bucket: big enough for a host's uploads and retries, far too small
/// for the greedy host's posts, with a refill too slow to matter.
const BURST: usize = 30;
const GREEDY_POSTS: usize = 40;

const POLICY: &str = "[rate_limit]\nreports_per_minute = 1\nburst = 30\n\
    [[rule]]\nplugin = \"pricey\"\nmax_busy_us_per_event = 50.0\nmin_events = 100\n\
    disable_for = \"1h\"\n";

/// A collector process; killed when dropped.
struct Replica {
    child: Child,
    base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(url: &str, policy: &std::path::Path) -> Result<Replica> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(env!("CARGO_BIN_EXE_sonde-collector"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--db", url, "--db-connections", "8"])
        .arg("--policy")
        .arg(policy)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    Ok(Replica { child, base: format!("http://127.0.0.1:{port}") })
}

async fn wait_healthy(client: &reqwest::Client, r: &Replica) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = client.get(format!("{}/healthz", r.base)).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "replica {} never became healthy", r.base);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("write to memory");
    enc.finish().expect("finish in memory")
}

/// POSTs `batch`; the status and, on 200, the answer.
async fn post(
    client: &reqwest::Client,
    base: &str,
    batch: &ReportBatch,
) -> Result<(u16, Option<EndpointResponse>)> {
    let resp = client
        .post(format!("{base}/v1/reports"))
        .header("content-encoding", "gzip")
        .body(gzip(&serde_json::to_vec(batch)?))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, (status == 200).then(|| serde_json::from_str(&text)).transpose()?))
}

/// The report of upload `n` of a host; a `pricey` host's plugin costs
/// 100 µs per event in every interval.
fn report(instance: Uuid, pricey: bool, n: u64) -> Report {
    let plugins = if pricey {
        vec![PluginReport {
            name: "pricey".into(),
            version: "1".into(),
            state: PluginState::Running,
            reason: None,
            until: None,
            last_failure: None,
            disabled_metrics: vec![],
            denied_metrics: vec![],
            cost: PluginCost { events: n * 1000, busy_us: n * 100_000, ..PluginCost::default() },
            metrics: vec![],
        }]
    } else {
        vec![]
    };
    Report::new(instance, BufferStats::default(), plugins)
}

/// What one host saw.
#[derive(Debug, Default)]
struct Seen {
    instance: Uuid,
    sent: Vec<Uuid>,
    /// Directives from the answers to its uploads (not to its retries).
    directives: Vec<Directive>,
    retries: usize,
    retries_accepted: u32,
    retry_answers_differ: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_store_each_report_once_and_deliver_each_directive_once() -> Result<()> {
    let pg = tokio::task::spawn_blocking(Postgres::shared).await?.map_err(anyhow::Error::msg)?;
    let url = pg.database().map_err(anyhow::Error::msg)?;
    let db = url.rsplit('/').next().context("name")?.to_string();
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY)?;
    // Both start at once: the migrations run once, under their lock.
    let replicas = Arc::new([spawn(&url, &policy)?, spawn(&url, &policy)?]);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    for r in replicas.iter() {
        wait_healthy(&client, r).await?;
    }

    let instances: Vec<Uuid> = (0..HOSTS).map(|_| Uuid::new_v4()).collect();
    let targeted: BTreeSet<Uuid> = instances.iter().step_by(3).copied().collect();
    let pricey: BTreeSet<Uuid> = instances.iter().skip(1).step_by(4).copied().collect();
    let disable = |i: usize| Directive::DisablePlugin {
        plugin: format!("p{i}"),
        for_secs: 3600,
        reason: "by hand".into(),
    };
    // Directives posted to one replica or the other.
    for (i, instance) in targeted.iter().enumerate() {
        let body = json!({ "instance_id": instance, "directive": disable(i) });
        let base = &replicas[i % 2].base;
        let resp = client.post(format!("{base}/v1/directives")).json(&body).send().await?;
        ensure!(resp.status() == 201, "{}", resp.status());
    }
    let everyone = Directive::Stop { reason: "retired".into() };
    let body = json!({ "instance_id": null, "directive": everyone });
    let resp =
        client.post(format!("{}/v1/directives", replicas[1].base)).json(&body).send().await?;
    ensure!(resp.status() == 201, "{}", resp.status());

    let mut hosts = Vec::new();
    for &instance in &instances {
        let (client, replicas) = (client.clone(), Arc::clone(&replicas));
        let pricey = pricey.contains(&instance);
        hosts.push(tokio::spawn(async move {
            let mut seen = Seen { instance, ..Seen::default() };
            if pricey {
                // A cheap start (1 µs per event), then two uploads of the
                // instance at the same moment, one to each replica, both over
                // the rule since that start: it still fires once.
                let mut cheap = report(instance, true, 1);
                cheap.plugins[0].cost.busy_us = 1000;
                seen.sent.push(cheap.report_id);
                let batch = ReportBatch { reports: vec![cheap] };
                let (status, answer) = post(&client, &replicas[0].base, &batch).await?;
                ensure!(status == 200, "upload refused: {status}");
                seen.directives.extend(answer.context("answer")?.directives);
                let (a, b) = (report(instance, true, 2), report(instance, true, 2));
                seen.sent.extend([a.report_id, b.report_id]);
                let (a, b) = (ReportBatch { reports: vec![a] }, ReportBatch { reports: vec![b] });
                let (ra, rb) = tokio::join!(
                    post(&client, &replicas[0].base, &a),
                    post(&client, &replicas[1].base, &b)
                );
                for (status, answer) in [ra?, rb?] {
                    ensure!(status == 200, "upload refused: {status}");
                    seen.directives.extend(answer.context("answer")?.directives);
                }
            }
            for n in 1..=UPLOADS as u64 {
                // Now and then two reports at once, as a host flushing its spool.
                let count = if n % 3 == 0 { 2 } else { 1 };
                let batch = ReportBatch {
                    reports: (0..count).map(|k| report(instance, pricey, 2 * n + k)).collect(),
                };
                seen.sent.extend(batch.reports.iter().map(|r| r.report_id));
                let first = fastrand::usize(..2);
                let (status, answer) = post(&client, &replicas[first].base, &batch).await?;
                ensure!(status == 200, "upload refused: {status}");
                let answer = answer.context("answer")?;
                ensure!(answer.accepted == Some(count as u32), "{answer:?}");
                seen.directives.extend(answer.directives.iter().cloned());
                // A third of the uploads are sent again to the other replica,
                // as a host does when the answer was lost.
                if fastrand::u8(..3) == 0 {
                    let (status, again) = post(&client, &replicas[1 - first].base, &batch).await?;
                    ensure!(status == 200, "retry refused: {status}");
                    let again = again.context("answer")?;
                    seen.retries += 1;
                    seen.retries_accepted += again.accepted.unwrap_or(0);
                    seen.retry_answers_differ += usize::from(again.directives != answer.directives);
                }
            }
            anyhow::Ok(seen)
        }));
    }
    let mut seen = Vec::new();
    for h in hosts {
        seen.push(h.await??);
    }

    // Every report sent is stored, once.
    let sent: BTreeSet<Uuid> = seen.iter().flat_map(|s| s.sent.iter().copied()).collect();
    let rows = pg.psql(&db, "SELECT report_id FROM reports").map_err(anyhow::Error::msg)?;
    let stored: Vec<Uuid> = rows.lines().map(str::parse).collect::<Result<_, _>>()?;
    assert_eq!(stored.len(), sent.len(), "rows: one per report");
    assert_eq!(stored.iter().copied().collect::<BTreeSet<_>>(), sent);
    // Duplicates sent to the other replica: none taken, answered the same.
    let retries: usize = seen.iter().map(|s| s.retries).sum();
    assert!(retries > 0);
    assert_eq!(seen.iter().map(|s| s.retries_accepted).sum::<u32>(), 0);
    assert_eq!(seen.iter().map(|s| s.retry_answers_differ).sum::<usize>(), 0);
    // Each instance got each directive meant for it once: its own, the
    // broadcast, and (pricey ones) one from the cost rule.
    for s in &seen {
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        for d in &s.directives {
            *got.entry(serde_json::to_string(d)?).or_default() += 1;
        }
        assert!(got.values().all(|&n| n == 1), "{}: {got:?}", s.instance);
        let rules = s
            .directives
            .iter()
            .filter(|d| matches!(d, Directive::DisablePlugin { plugin, .. } if plugin == "pricey"))
            .count();
        let own = s
            .directives
            .iter()
            .filter(|d| matches!(d, Directive::DisablePlugin { plugin, .. } if plugin != "pricey"))
            .count();
        assert_eq!(rules, usize::from(pricey.contains(&s.instance)), "{}", s.instance);
        assert_eq!(own, usize::from(targeted.contains(&s.instance)), "{}", s.instance);
        assert!(s.directives.contains(&everyone), "{}", s.instance);
    }
    let counts = pg
        .psql(
            &db,
            "SELECT (SELECT COUNT(*) FROM directives WHERE source = 'rule'),
                    (SELECT COUNT(*) FROM deliveries),
                    (SELECT COUNT(*) FROM deliveries d JOIN directives x ON x.id = d.directive_id
                     WHERE x.instance_id IS NULL)",
        )
        .map_err(anyhow::Error::msg)?;
    // Each report's interval was taken against the one stored before it,
    // even for the two posted at once: the intervals add up to the total.
    let sums = pg
        .psql(
            &db,
            "SELECT COUNT(*) FROM (SELECT instance_id FROM report_plugins GROUP BY instance_id
             HAVING SUM(d_events) = MAX(events)) AS exact",
        )
        .map_err(anyhow::Error::msg)?;
    assert_eq!(sums, pricey.len().to_string());
    let expected_deliveries = targeted.len() + pricey.len() + HOSTS;
    assert_eq!(counts, format!("{}|{expected_deliveries}|{HOSTS}", pricey.len()));

    // One greedy instance posting to both replicas in turn: the bucket is
    // shared, so it gets its burst once, not once per replica.
    let greedy = Uuid::new_v4();
    let (mut ok, mut throttled) = (0, 0);
    for i in 0..GREEDY_POSTS {
        let batch = ReportBatch { reports: vec![report(greedy, false, 1)] };
        match post(&client, &replicas[i % 2].base, &batch).await?.0 {
            200 => ok += 1,
            429 => throttled += 1,
            other => anyhow::bail!("unexpected {other}"),
        }
    }
    // A token a minute may come back during the run.
    assert!((BURST..=BURST + 1).contains(&ok), "{ok} accepted, {throttled} throttled");
    assert_eq!(ok + throttled, GREEDY_POSTS);
    Ok(())
}
