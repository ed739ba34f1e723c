//! The dashboard in a real browser: Debian's headless Chromium, driven by
//! chromedriver (WebDriver, which drives Chromium over the DevTools
//! protocol) through `fantoccini`. Each page is loaded against a collector
//! holding the seeded fleet ([`super::fleet::seed`]); the figures shown are
//! checked against the stored data (`/v1/fleet`), the test clicks through
//! to an instance, logs in with the admin token through the form, adds and
//! deletes a directive, and saves screenshots under
//! `target/ui-screenshots/<backend>/`.
//!
//! `cargo xtask test` installs `chromium` and `chromium-driver` (Debian)
//! and sets `SONDE_CHROMEDRIVER`; without it the test is skipped, except in
//! CI (`CI` set), where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::fleet::{SCRIPT_PLUGIN, assert_nothing_small, seed};
use super::{Backend, TOKEN, start};

/// Chromium's flags: headless as root, and nothing that calls Google's
/// hosts (the network is closed here: without these it hangs on them).
const CHROMIUM_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
];

/// How long chromedriver may take to answer its first session.
const DRIVER_START: Duration = Duration::from_secs(60);

/// A chromedriver process, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver and a browser session; both end when dropped.
struct Browser {
    client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session with a fresh
    /// profile; `None` when chromedriver is not installed (outside CI).
    async fn start() -> Result<Option<Browser>> {
        let driver = std::env::var_os("SONDE_CHROMEDRIVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
        let chromium =
            std::env::var("SONDE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if !driver.exists() || !Path::new(&chromium).exists() {
            ensure!(std::env::var_os("CI").is_none(), "CI: chromedriver or chromium missing");
            eprintln!(
                "skipped: no {} or {chromium} (cargo xtask test installs them)",
                driver.display()
            );
            return Ok(None);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Driver(
            Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting chromedriver")?,
        );
        let profile = tempfile::tempdir()?;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({ "goog:chromeOptions": { "binary": chromium, "args": args } });
        let Value::Object(caps) = caps else { bail!("capabilities") };
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            match connect(&url, &caps).await {
                Some(client) => {
                    return Ok(Some(Browser { client, _driver: driver, _profile: profile }));
                }
                None if started.elapsed() > DRIVER_START => bail!("chromedriver did not start"),
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

async fn connect(url: &str, caps: &fantoccini::wd::Capabilities) -> Option<Client> {
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(caps.clone()).connect(url).await.ok()
}

/// The texts of the cells matching `css`.
async fn texts(c: &Client, css: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in c.find_all(Locator::Css(css)).await? {
        out.push(e.text().await?);
    }
    Ok(out)
}

async fn text(c: &Client, css: &str) -> Result<String> {
    Ok(c.find(Locator::Css(css)).await.with_context(|| format!("no `{css}`"))?.text().await?)
}

async fn shot(c: &Client, dir: &Path, name: &str) -> Result<()> {
    let png = c.screenshot().await?;
    ensure!(png.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(dir.join(name), png)?;
    Ok(())
}

/// Waits until the browser is at `path`.
async fn at(c: &Client, path: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let url = c.current_url().await?;
        if url.path() == path {
            return Ok(());
        }
        ensure!(started.elapsed() < Duration::from_secs(20), "at {url}, not {path}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `css` matches `n` elements (a form's answer has loaded).
async fn rows(c: &Client, css: &str, n: usize) -> Result<()> {
    let started = Instant::now();
    loop {
        let found = c.find_all(Locator::Css(css)).await?.len();
        if found == n {
            return Ok(());
        }
        ensure!(started.elapsed() < Duration::from_secs(20), "{found} `{css}`, not {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The row cells of plugin `name` on the plugins page.
async fn plugin_row(c: &Client, name: &str) -> Result<Vec<String>> {
    let css = format!("#plugins tr.plugin[data-plugin=\"{name}\"] td");
    let cells = texts(c, &css).await?;
    ensure!(!cells.is_empty(), "no row for {name}");
    Ok(cells)
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Some(f) => format!("{f:.2}").trim_end_matches('0').to_string(),
        None => "–".into(),
    }
}

pub(crate) async fn the_dashboard_shows_the_stored_fleet_in_a_real_browser(
    b: Backend,
) -> Result<()> {
    let server = start(b, "", Some(TOKEN)).await?;
    let seeded = seed(&server).await?;
    let Some(browser) = Browser::start().await? else { return Ok(()) };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/ui-screenshots")
        .join(format!("{b:?}").to_lowercase());
    std::fs::create_dir_all(&dir)?;
    let c = &browser.client;
    // What is stored, as the read API says.
    let stored = server.get("/v1/fleet?window=1h").await?;

    // The public overview: k-anonymous.
    c.goto(&server.url("/ui?window=1h")).await?;
    assert_eq!(text(c, "#instances").await?, stored["instances"].to_string());
    assert_eq!(texts(c, "#by-version td").await?, ["1.0.0", "6", "other", "9"]);
    assert_nothing_small(&c.source().await?, &seeded);
    assert!(c.find_all(Locator::Css("a.instance")).await?.is_empty());
    shot(c, &dir, "1-public-fleet.png").await?;

    // The public plugins page: the plugin named `<script>...` is text.
    c.goto(&server.url("/ui/plugins?window=1h")).await?;
    let script = plugin_row(c, SCRIPT_PLUGIN).await?;
    assert_eq!(script[0], SCRIPT_PLUGIN);
    assert_eq!(script[1], "6");
    assert_eq!(script[2..7], ["<5", "<5", "<5", "0", "<5"], "counts under k are hidden");
    let scripts =
        c.execute("return document.getElementsByTagName('script').length", vec![]).await?;
    assert_eq!(scripts, json!(0), "the page has no script element");
    assert_nothing_small(&c.source().await?, &seeded);
    shot(c, &dir, "2-public-plugins.png").await?;

    // An instance's page needs the admin.
    c.goto(&server.url(&format!("/ui/instances/{}", seeded.a[0]))).await?;
    assert!(text(c, "main").await?.contains("needs the admin token"));

    // Log in through the form.
    c.goto(&server.url("/ui/login")).await?;
    c.find(Locator::Css("#login input[name=token]")).await?.send_keys(TOKEN).await?;
    c.find(Locator::Css("#login button[type=submit]")).await?.click().await?;
    at(c, "/ui").await?;

    // The full overview.
    c.goto(&server.url("/ui?window=1h")).await?;
    assert_eq!(text(c, "#instances").await?, "15");
    assert_eq!(text(c, "#reports").await?, stored["reports"].to_string());
    assert_eq!(texts(c, "#by-version td").await?, ["1.0.0", "6", "1.1.0", "5", "0.9.0-rare", "4"]);
    assert_eq!(c.find_all(Locator::Css("a.instance")).await?.len(), 15);
    let bars: u64 = {
        let mut sum = 0;
        for e in c.find_all(Locator::Css("#reports-per-hour rect.bar")).await? {
            sum += e.attr("data-reports").await?.context("data-reports")?.parse::<u64>()?;
        }
        sum
    };
    assert_eq!(bars, 30, "the chart's bars add up to the reports stored");
    shot(c, &dir, "3-admin-fleet.png").await?;

    // The plugins and their cost, against the stored figures.
    c.goto(&server.url("/ui/plugins?window=1h")).await?;
    let plugin = |name: &str| -> Result<Value> {
        stored["plugins"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["plugin"] == name))
            .cloned()
            .context("stored plugin")
    };
    let http = plugin("http")?;
    let row = plugin_row(c, "http").await?;
    let busy = &http["busy_us_per_event"];
    assert_eq!(row[1], http["instances"].to_string());
    assert_eq!(row[8..11], [num(&busy["p50"]), num(&busy["p90"]), num(&busy["p99"])]);
    assert_eq!(row[8..11], ["8", "14", "15"]);
    assert_eq!(row[11], "8 MiB");
    let row = plugin_row(c, SCRIPT_PLUGIN).await?;
    assert_eq!(row[0], SCRIPT_PLUGIN);
    assert_eq!(row[2..7], ["2", "2", "1", "0", "1"]);
    assert!(texts(c, "#reasons td.reason").await?.contains(&"too slow".to_string()));
    assert!(c.find(Locator::Css("#cost-chart")).await.is_ok());
    shot(c, &dir, "4-admin-plugins.png").await?;

    // Click through to an instance.
    c.goto(&server.url("/ui?window=1h")).await?;
    let a0 = seeded.a[0].to_string();
    c.find(Locator::Css(&format!("a.instance[href='/ui/instances/{a0}']"))).await?.click().await?;
    at(c, &format!("/ui/instances/{a0}")).await?;
    assert_eq!(text(c, "#instance-id").await?, a0);
    assert_eq!(texts(c, "#instance-reports tr.report").await?.len(), 2);
    let state =
        text(c, &format!("#instance-plugins tr[data-plugin=\"{SCRIPT_PLUGIN}\"] td.state")).await?;
    assert_eq!(state, "disabled");
    assert_eq!(texts(c, "#instance-directives td.reason").await?, ["too slow <b>here</b>"]);
    assert_eq!(texts(c, "#instance-directives td.plugin").await?, [SCRIPT_PLUGIN]);
    shot(c, &dir, "5-instance.png").await?;

    // The directives in force: add one through the form, then delete it.
    c.goto(&server.url("/ui/directives")).await?;
    let before = c.find_all(Locator::Css("#directives tr.directive")).await?.len();
    assert_eq!(before, 3);
    c.find(Locator::Css("#add-directive input[name=plugin]")).await?.send_keys("http").await?;
    c.find(Locator::Css("#add-directive input[name=reason]"))
        .await?
        .send_keys("<i>costly</i>")
        .await?;
    c.find(Locator::Css("#add-directive button[type=submit]")).await?.click().await?;
    rows(c, "#directives tr.directive", before + 1).await?;
    assert_eq!(text(c, "#directives tr.directive td.reason").await?, "<i>costly</i>");
    let listed = server.get("/v1/directives").await?;
    assert_eq!(listed[0]["directive"]["plugin"], "http");
    assert_eq!(listed[0]["instance_id"], Value::Null);
    shot(c, &dir, "6-directives.png").await?;
    let id = listed[0]["id"].as_i64().context("id")?;
    c.find(Locator::Css(&format!("#directives tr[data-id='{id}'] button"))).await?.click().await?;
    rows(c, "#directives tr.directive", before).await?;

    // Metric totals.
    c.goto(&server.url("/ui/metrics?window=1h")).await?;
    let rows = texts(c, "#metrics tr.metric").await?;
    assert!(rows.iter().any(|r| r.contains("status=200") && r.contains("375")), "{rows:?}");
    shot(c, &dir, "7-metrics.png").await?;
    drop(browser);
    Ok(())
}
