//! The fleet figures (`/v1/fleet`), their k-anonymous form
//! (`/v1/fleet/public`, public `/ui` pages, `export --public`), on both
//! backends, against a fleet whose figures are known.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use reqwest::StatusCode;
use serde_json::Value;
use sonde_collector::store::DirectiveSource;
use sonde_core::{Directive, MetricKind, MetricValue, PluginState};
use uuid::Uuid;

use super::{Backend, Server, TOKEN, plugin, report, series, start};

/// The k of the public view in these tests.
pub(crate) const K: u64 = 5;

/// The strings of the groups of fewer than k instances: none may appear in
/// a public figure.
pub(crate) const SMALL_GROUPS: [&str; 5] =
    ["0.9.0-rare", "freebsd", "aarch64", "rare-plugin", "5xx-rare"];

/// The plugin whose name is markup.
pub(crate) const SCRIPT_PLUGIN: &str = "<script>alert(1)</script>";

/// What [`seed`] stored.
pub(crate) struct Seeded {
    /// 6 instances: sonde 1.0.0, linux, x86_64.
    pub(crate) a: Vec<Uuid>,
    /// 5 instances: sonde 1.1.0, linux, x86_64.
    pub(crate) c: Vec<Uuid>,
    /// 4 instances (k - 1): sonde 0.9.0-rare, freebsd, aarch64.
    pub(crate) b: Vec<Uuid>,
}

impl Seeded {
    pub(crate) fn all(&self) -> impl Iterator<Item = &Uuid> {
        self.a.iter().chain(&self.c).chain(&self.b)
    }
}

/// Uploads two reports (one run) from each of 15 instances:
///
/// - `http` on all 15, running; instance i (0..15) spends i + 1 µs per
///   event and peaks at i + 1 MiB; counter `requests{status=200}` grows by
///   25 on each, `{status=404}` by 3 on a[0..5], `{status=5xx-rare}` by 2 on b.
/// - `<script>alert(1)</script>` on the 6 a: switched off on a[0], a[1]
///   by the admin, on a[2] by a rule, on a[3] by the host itself.
/// - `denied-one` on the 5 c: denied by the operator's manifest.
/// - `rare-plugin` on the 4 b, running.
pub(crate) async fn seed(server: &Server) -> Result<Seeded> {
    let new = |n: usize| (0..n).map(|_| Uuid::new_v4()).collect::<Vec<_>>();
    let seeded = Seeded { a: new(6), c: new(5), b: new(4) };
    for (i, id) in seeded.all().enumerate() {
        let (version, os, arch) = if seeded.a.contains(id) {
            ("1.0.0", "linux", "x86_64")
        } else if seeded.c.contains(id) {
            ("1.1.0", "linux", "x86_64")
        } else {
            ("0.9.0-rare", "freebsd", "aarch64")
        };
        let a = seeded.a.iter().position(|x| x == id);
        match a {
            Some(0 | 1) => {
                let d = Directive::DisablePlugin {
                    plugin: SCRIPT_PLUGIN.into(),
                    for_secs: 3600,
                    reason: "too slow <b>here</b>".into(),
                };
                server.post_directive(Some(*id), &d).await?;
            }
            Some(2) => {
                let d = Directive::DisablePlugin {
                    plugin: SCRIPT_PLUGIN.into(),
                    for_secs: 3600,
                    reason: "rule: busy".into(),
                };
                let now = std::time::SystemTime::now();
                server
                    .state
                    .store()
                    .add_directive(Some(*id), d, DirectiveSource::Rule, now)
                    .await?;
            }
            _ => {}
        }
        let per_event = i as u64 + 1;
        for (n, events, requests, not_found) in [(0, 1000, 10.0, 1.0), (1, 3000, 25.0, 3.0)] {
            let mut http = plugin("http", PluginState::Running, events, events * per_event);
            http.cost.peak_memory_bytes = per_event << 20;
            let counter = |status: &str, v: f64| {
                series("requests", MetricKind::Counter, status, MetricValue::Scalar { value: v })
            };
            http.metrics.push(counter("200", requests));
            if a.is_some_and(|a| a < 5) {
                http.metrics.push(counter("404", not_found));
            }
            if seeded.b.contains(id) {
                http.metrics.push(counter("5xx-rare", 2.0));
            }
            let mut plugins = vec![http];
            if let Some(a) = a {
                let mut p = plugin(SCRIPT_PLUGIN, PluginState::Running, events, events);
                if n == 1 && a < 4 {
                    p.state = PluginState::Disabled;
                    p.reason = Some(if a == 3 { "cost breaker".into() } else { "too slow".into() });
                }
                plugins.push(p);
            }
            if seeded.c.contains(id) {
                let mut p = plugin("denied-one", PluginState::Denied, 0, 0);
                p.reason = Some("not allowed by the manifest".into());
                plugins.push(p);
            }
            if seeded.b.contains(id) {
                plugins.push(plugin("rare-plugin", PluginState::Running, events, events));
            }
            let mut r = report(*id, plugins);
            r.started = Some("2026-12-01T00:00:00Z".into());
            r.host.sonde_version = version.into();
            r.host.os = os.into();
            r.host.arch = arch.into();
            server.answer(&r).await?;
        }
    }
    Ok(seeded)
}

fn group(v: &Value, list: &str, key: &str) -> Option<u64> {
    v[list].as_array()?.iter().find(|g| g["key"] == key && g["other"] == false)?["instances"]
        .as_u64()
}

fn other(v: &Value, list: &str) -> Option<u64> {
    v[list].as_array()?.iter().find(|g| g["other"] == true)?["instances"].as_u64()
}

fn plugin_of<'a>(v: &'a Value, name: &str) -> Result<&'a Value> {
    v["plugins"]
        .as_array()
        .context("plugins")?
        .iter()
        .find(|p| p["plugin"] == name && p["other"] == false)
        .with_context(|| format!("plugin {name} in {v:#}"))
}

fn total(v: &Value, status: Option<&str>) -> Option<(u64, f64)> {
    let m = v["metrics"].as_array()?.iter().find(|m| {
        m["name"] == "requests"
            && match status {
                Some(s) => m["labels"]["status"] == s && m["other"] == false,
                None => m["other"] == true,
            }
    })?;
    Some((m["instances"].as_u64()?, m["total"].as_f64()?))
}

pub(crate) async fn the_fleet_figures_match_what_the_instances_sent(b: Backend) -> Result<()> {
    let server = start(b, "", Some(TOKEN)).await?;
    let seeded = seed(&server).await?;
    let v = server.get("/v1/fleet?window=1h").await?;
    assert_eq!(v["k"], Value::Null);
    assert_eq!(v["truncated"], false);
    assert_eq!((v["instances"].as_u64(), v["reports"].as_u64()), (Some(15), Some(30)), "{v:#}");
    assert_eq!(group(&v, "by_version", "1.0.0"), Some(6));
    assert_eq!(group(&v, "by_version", "1.1.0"), Some(5));
    assert_eq!(group(&v, "by_version", "0.9.0-rare"), Some(4));
    assert_eq!((group(&v, "by_os", "linux"), group(&v, "by_os", "freebsd")), (Some(11), Some(4)));
    assert_eq!(group(&v, "by_arch", "aarch64"), Some(4));
    let hours = v["reports_per_hour"].as_array().context("hours")?;
    let sum: u64 = hours.iter().filter_map(|h| h["reports"].as_u64()).sum();
    assert_eq!(sum, 30);
    assert!((2..=3).contains(&hours.len()), "a 1h window spans 2 or 3 clock hours");

    let http = plugin_of(&v, "http")?;
    assert_eq!(http["instances"], 15);
    assert_eq!(http["states"]["running"], 15);
    // One sample per instance: 1..=15 µs per event; 1..=15 MiB.
    let busy = &http["busy_us_per_event"];
    assert_eq!((busy["samples"].as_u64(), busy["p50"].as_f64()), (Some(15), Some(8.0)));
    assert_eq!((busy["p90"].as_f64(), busy["p99"].as_f64()), (Some(14.0), Some(15.0)));
    assert_eq!(busy["max"].as_f64(), Some(15.0));
    assert_eq!(http["peak_memory_bytes"]["p50"].as_f64(), Some(8.0 * 1024.0 * 1024.0));
    assert_eq!(http["failures"]["max"].as_f64(), Some(0.0));

    let script = plugin_of(&v, SCRIPT_PLUGIN)?;
    assert_eq!(script["instances"], 6);
    assert_eq!(
        (script["states"]["running"].as_u64(), script["states"]["disabled"].as_u64()),
        (Some(2), Some(4))
    );
    let by = &script["disabled_by"];
    assert_eq!((by["admin"].as_u64(), by["rule"].as_u64()), (Some(2), Some(1)));
    assert_eq!((by["host"].as_u64(), by["operator"].as_u64()), (Some(1), Some(0)));
    let reasons = script["reasons"].as_array().context("reasons")?;
    assert_eq!(reasons[0]["reason"], "too slow");
    assert_eq!(reasons[0]["instances"], 3);
    assert_eq!(reasons[1]["reason"], "cost breaker");
    let denied = plugin_of(&v, "denied-one")?;
    assert_eq!(
        (denied["instances"].as_u64(), denied["disabled_by"]["operator"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(plugin_of(&v, "rare-plugin")?["instances"], 4);

    // Counters add up their changes over the window: 25 per instance.
    assert_eq!(total(&v, Some("200")), Some((15, 375.0)));
    assert_eq!(total(&v, Some("404")), Some((5, 15.0)));
    assert_eq!(total(&v, Some("5xx-rare")), Some((4, 8.0)));

    // The directives delivered to an instance, for its page.
    let delivered = server.get(&format!("/v1/instances/{}/directives", seeded.a[0])).await?;
    let delivered = delivered.as_array().context("list")?;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["source"], "admin");
    assert_eq!(delivered[0]["directive"]["plugin"], SCRIPT_PLUGIN);
    let none = server.get(&format!("/v1/instances/{}/directives", seeded.b[0])).await?;
    assert_eq!(none, Value::Array(vec![]));
    // A window in the future of every report: nothing.
    let empty = server.get("/v1/fleet?window=1s").await?;
    assert!(empty["instances"].as_u64() <= Some(15));
    Ok(())
}

/// Every list of groups in a public figure covers at least k instances.
pub(crate) fn assert_k_anonymous(v: &Value) {
    for list in ["by_version", "by_os", "by_arch", "plugins", "metrics"] {
        for g in v[list].as_array().expect("list") {
            assert!(g["instances"].as_u64() >= Some(K), "{list}: {g}");
            for r in g["reasons"].as_array().into_iter().flatten() {
                assert!(r["instances"].as_u64() >= Some(K), "reason {r}");
            }
            for n in g["states"].as_object().into_iter().flat_map(|s| s.values()) {
                assert!(n.is_null() || n.as_u64() == Some(0) || n.as_u64() >= Some(K), "{g}");
            }
            if let Some(p) = g["busy_us_per_event"].as_object() {
                assert!(p["p99"].is_null() && p["max"].is_null(), "{g}");
            }
        }
    }
}

/// `text` holds no group smaller than k and no instance id.
pub(crate) fn assert_nothing_small(text: &str, seeded: &Seeded) {
    for s in SMALL_GROUPS {
        assert!(!text.contains(s), "`{s}` (a group of k - 1) appears in:\n{text}");
    }
    for id in seeded.all() {
        assert!(!text.contains(&id.to_string()), "instance {id} appears in:\n{text}");
    }
}

pub(crate) async fn public_figures_never_show_a_group_under_k(b: Backend) -> Result<()> {
    let server = start(b, "", Some(TOKEN)).await?;
    let seeded = seed(&server).await?;
    // No token: the public figures only.
    let resp = server.client.get(server.url("/v1/fleet/public?window=1h")).send().await?;
    ensure!(resp.status() == StatusCode::OK, "{}", resp.status());
    let text = resp.text().await?;
    assert_nothing_small(&text, &seeded);
    let v: Value = serde_json::from_str(&text)?;
    assert_k_anonymous(&v);
    assert_eq!(v["k"], K);
    assert_eq!((v["instances"].as_u64(), v["reports"].as_u64()), (Some(15), Some(30)));
    // 0.9.0-rare (4) is folded into `other`, which then takes 1.1.0 (5).
    assert_eq!(group(&v, "by_version", "1.0.0"), Some(6));
    assert_eq!(group(&v, "by_version", "1.1.0"), None);
    assert_eq!(other(&v, "by_version"), Some(9));
    // freebsd (4) alone: folded with linux (11) into one `other` of 15.
    assert_eq!(group(&v, "by_os", "linux"), None);
    assert_eq!(other(&v, "by_os"), Some(15));
    // The script plugin's group is 6 instances; its counts under 5 are hidden.
    let script = plugin_of(&v, SCRIPT_PLUGIN)?;
    assert_eq!(script["disabled_by"]["admin"], Value::Null);
    assert_eq!(script["states"]["running"], Value::Null);
    assert!(script["reasons"].as_array().is_some_and(Vec::is_empty), "{script}");
    // rare-plugin (4) and denied-one (5) make one `other` of 9.
    let other_plugin =
        v["plugins"].as_array().context("plugins")?.iter().find(|p| p["other"] == true);
    assert_eq!(other_plugin.and_then(|p| p["instances"].as_u64()), Some(9));
    // requests{5xx-rare} (4) and {404} (5) make one `other` of 9 instances.
    assert_eq!(total(&v, Some("200")), Some((15, 375.0)));
    assert_eq!(total(&v, Some("404")), None);
    assert_eq!(total(&v, None), Some((9, 23.0)));

    // The public pages: the same rule, and no instance's page.
    for page in ["/ui", "/ui/plugins", "/ui/metrics", "/ui?window=31d"] {
        let resp = server.client.get(server.url(page)).send().await?;
        ensure!(resp.status() == StatusCode::OK, "{page}: {}", resp.status());
        assert_nothing_small(&resp.text().await?, &seeded);
    }
    for page in [format!("/ui/instances/{}", seeded.a[0]), "/ui/directives".into()] {
        let resp = server.client.get(server.url(&page)).send().await?;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{page}");
        assert_nothing_small(&resp.text().await?, &seeded);
    }
    // The admin sees the small groups.
    let resp = server.admin(server.client.get(server.url("/ui"))).send().await?;
    let text = resp.text().await?;
    assert!(text.contains("0.9.0-rare") && text.contains(&seeded.b[0].to_string()));

    // A form posted from another site is refused, even with the admin's
    // credentials (a loopback admin without a token would have none to
    // check); the same form from the collector's own page goes through.
    let directives = || async {
        let resp = server.admin(server.client.get(server.url("/v1/directives"))).send().await?;
        anyhow::Ok(resp.json::<Value>().await?.to_string())
    };
    let before = directives().await?;
    let form = "plugin=http&instance_id=&for_secs=60&reason=x";
    let host = server.url("").trim_start_matches("http://").trim_end_matches('/').to_string();
    for (header, value) in
        [("origin", "http://evil.example"), ("sec-fetch-site", "cross-site"), ("origin", "null")]
    {
        let post = server
            .client
            .post(server.url("/ui/directives"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form);
        let resp = server.admin(post).header(header, value).send().await?;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{header}: {value}");
    }
    assert_eq!(directives().await?, before, "a refused post added a directive");
    let post = server
        .client
        .post(server.url("/ui/directives"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form);
    let resp = server
        .admin(post)
        .header("origin", format!("http://{host}"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await?;
    // (reqwest follows the 303 to the list.)
    assert!(resp.status().is_redirection() || resp.status() == StatusCode::OK, "{}", resp.status());
    assert_ne!(directives().await?, before);

    // `export --public`: the real binary, on the same database.
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sonde-collector"))
        .args(["export", "--public"])
        .arg(dir.path())
        .args(["--window", "1h", "--format", "json", "--db"])
        .arg(server.db_arg())
        .output()?;
    ensure!(out.status.success(), "export: {}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!((summary["k"].as_u64(), summary["instances"].as_u64()), (Some(K), Some(15)));
    for name in sonde_collector::export::FILES {
        let text = std::fs::read_to_string(dir.path().join(name))?;
        assert_nothing_small(&text, &seeded);
        if name == "fleet.json" {
            assert_k_anonymous(&serde_json::from_str(&text)?);
        } else if name != "reports_per_hour.csv" {
            // The instances column of every group: at least k.
            let header: Vec<&str> = text.lines().next().context("header")?.split(',').collect();
            let col = header.iter().position(|h| *h == "instances").context("instances column")?;
            for line in text.lines().skip(1) {
                let n: u64 = csv_cells(line).get(col).context("cell")?.parse()?;
                assert!(n >= K, "{name}: {line}");
            }
        }
    }
    let versions = std::fs::read_to_string(dir.path().join("versions.csv"))?;
    assert_eq!(versions, "key,other,instances\n1.0.0,false,6\n,true,9\n");
    let plugins = std::fs::read_to_string(dir.path().join("plugins.csv"))?;
    assert!(
        plugins.contains("\"<script>alert(1)</script>\"")
            || plugins.contains("<script>alert(1)</script>,")
    );

    // The public figures of a window are kept for PUBLIC_FLEET_TTL (30 s):
    // a 16th instance reporting now shows to the admin at once, and to the
    // public (page and JSON alike) only once they are read again.
    let public = || async {
        let resp = server.client.get(server.url("/v1/fleet/public?window=1h")).send().await?;
        anyhow::Ok(resp.json::<Value>().await?["instances"].as_u64())
    };
    assert_eq!(public().await?, Some(15));
    server
        .answer(&report(Uuid::new_v4(), vec![plugin("http", PluginState::Running, 10, 10)]))
        .await?;
    assert_eq!(public().await?, Some(15), "served from memory");
    let admin = server.admin(server.client.get(server.url("/v1/fleet?window=1h"))).send().await?;
    assert_eq!(admin.json::<Value>().await?["instances"].as_u64(), Some(16));
    let fresh = server.state.fleet(Duration::from_secs(3600), false).await?;
    assert_eq!(fresh.instances, Some(16));
    Ok(())
}

/// The cells of a CSV line (quotes handled).
fn csv_cells(line: &str) -> Vec<String> {
    let (mut cells, mut cell, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(std::mem::take(&mut cell)),
            c => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

pub(crate) async fn fleet_windows_are_bounded_and_bad_ones_refused(b: Backend) -> Result<()> {
    let server = start(b, "", Some(TOKEN)).await?;
    for bad in ["32d", "0s", "soon"] {
        let resp = server
            .admin(server.client.get(server.url(&format!("/v1/fleet?window={bad}"))))
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let resp =
            server.client.get(server.url(&format!("/v1/fleet/public?window={bad}"))).send().await?;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // The full figures are the admin's.
    let resp = server.client.get(server.url("/v1/fleet")).send().await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // An empty collector: the public view shows no group at all.
    let v: Value = server.client.get(server.url("/v1/fleet/public")).send().await?.json().await?;
    assert_eq!(v["instances"], 0);
    assert_eq!(v["reports_per_hour"].as_array().map(Vec::len), Some(25));
    assert!(v["by_version"].as_array().is_some_and(Vec::is_empty));
    Ok(())
}
