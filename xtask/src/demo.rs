//! `cargo xtask demo`: the whole loop, on loopback, with the real binaries.
//!
//! 1. The operator's local view: pin, check, list, preview the example events.
//! 2. `sonde-collector` starts with a policy that finds `user-agent` expensive.
//! 3. The example axum server starts with sonde embedded (mode "on") and gets
//!    a burst of real HTTP requests.
//! 4. The collector stores the first report and answers with a directive that
//!    switches `user-agent` off; the next report shows it disabled.
//! 5. The collector's dashboard (`/ui`): its URL and what it shows.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const USER_AGENTS: [&str; 5] = [
    "curl/8.5.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "python-requests/2.31.0",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
];
const PATHS: [&str; 5] =
    ["/users/17", "/users/42?token=abc", "/orders", "/health", "/no/such/page"];

pub(crate) fn run(root: &Path) -> Result<()> {
    crate::cargo(
        root,
        &[
            "build",
            "--quiet",
            "-p",
            "sonde-cli",
            "-p",
            "sonde-collector",
            "-p",
            "sonde-example-server",
        ],
    )?;
    let bin = |name: &str| root.join("target/debug").join(name);
    let dir = root.join("target/demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // Copies of examples/sonde.toml, re-pinned: the example's pins hold for
    // our toolchain; this way the demo also runs on another.
    let example = std::fs::read_to_string(root.join("examples/sonde.toml"))?
        .replace("\"../target/plugins/", "\"../plugins/");
    let local = dir.join("sonde.toml");
    std::fs::write(&local, example.replace("\"../target/sonde-state\"", "\"state\""))?;
    let local = local.to_str().context("non-UTF-8 path")?;
    let events = root.join("examples/events.jsonl");
    let events = events.to_str().context("non-UTF-8 path")?;
    let sonde = |title: &str, args: &[&str]| -> Result<()> {
        println!("\n== {title}\n$ sonde {}", args.join(" "));
        let status = Command::new(bin("sonde")).args(args).status().context("running sonde")?;
        ensure!(status.success(), "`sonde {}` failed ({status})", args.join(" "));
        Ok(())
    };
    sonde("pin the plugins the operator reviewed", &["pin", "-m", local])?;
    sonde("check the manifest and every plugin", &["check", "-m", local])?;
    sonde(
        "what would leave this host for the example events",
        &["preview", "-m", local, "--events", events],
    )?;

    // The collector, with a policy that finds user-agent expensive.
    let collector_addr = free_addr()?;
    std::fs::write(
        dir.join("policy.toml"),
        "# Demo policy: a user-agent cost over 0.01 µs per event is \"expensive\".\n\
         [[rule]]\nplugin = \"user-agent\"\nmax_busy_us_per_event = 0.01\nmin_events = 100\n\
         disable_for = \"1h\"\nreason = \"expensive: {busy_us_per_event} µs per event\"\n",
    )?;
    println!("\n== start the reference collector on {collector_addr}");
    let log = std::fs::File::create(dir.join("collector.log"))?;
    let _collector = Guard(
        Command::new(bin("sonde-collector"))
            .args(["--listen", &collector_addr, "--db"])
            .arg(dir.join("collector.db"))
            .arg("--policy")
            .arg(dir.join("policy.toml"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting sonde-collector")?,
    );
    wait_for_port(&collector_addr)?;

    // The example server, sending every 2 s to the collector.
    let on = dir.join("sonde-on.toml");
    let on_text = example
        .replace(
            "mode = \"local\"",
            &format!(
                "mode = \"on\"\nendpoint = \"http://{collector_addr}/v1/reports\"\ninterval = \"2s\"\n\
                 min_interval = \"1s\"\nmax_interval = \"10s\"\nmax_requests_per_hour = 120"
            ),
        )
        .replace("\"../target/sonde-state\"", "\"state-on\"");
    std::fs::write(&on, on_text)?;
    let on = on.to_str().context("non-UTF-8 path")?;
    sonde("pin the server's manifest", &["pin", "-m", on])?;
    println!(
        "\n== start the example server with sonde embedded (mode \"on\", user agents allowed)"
    );
    let log = std::fs::File::create(dir.join("server.log"))?;
    let mut server = Guard(
        Command::new(bin("sonde-example-server"))
            .args(["--listen", "127.0.0.1:0", "--user-agents", "--manifest", on])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting the example server")?,
    );
    let mut line = String::new();
    let stdout = server.0.stdout.take().context("server stdout")?;
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let server_addr =
        line.trim().strip_prefix("listening on ").context("server address")?.to_string();

    let first = burst(&server_addr, 1000)?;
    println!(
        "\n== sent {first} real HTTP requests to http://{server_addr} (5 routes, 5 user agents)"
    );
    let instance = wait_for(&collector_addr, "a stored report", |reports| !reports.is_empty())?;
    let reports = stored(&collector_addr, &instance)?;
    print_report("the report the collector stored", &reports[reports.len() - 1]);

    let second = burst(&server_addr, 1000)?;
    println!("\n== sent {second} more requests");
    wait_for(&collector_addr, "a report without user-agent", |reports| {
        reports.first().is_some_and(|r| plugin_state(r, "user-agent") == "disabled")
    })?;
    let reports = stored(&collector_addr, &instance)?;
    print_report(
        "the next report: the collector's cost policy switched user-agent off",
        &reports[0],
    );
    sonde("what the operator sees on the server's host", &["status", "-m", on])?;

    let _ = Command::new("kill").args(["-s", "TERM", &server.0.id().to_string()]).status();
    let _ = server.0.wait();
    println!(
        "\ndemo done: {} requests through the example server; {} reports stored by sonde-collector; \
         its cost policy switched user-agent off and the server obeyed.\n\
         files: target/demo/ (manifests, state, collector.db, collector.log, server.log)",
        first + second,
        stored(&collector_addr, &instance)?.len()
    );
    dashboard(&collector_addr, &instance)
}

/// Prints the dashboard's URL and what its pages show (after checking that
/// each one answers); on a terminal, keeps the collector up until Enter.
fn dashboard(addr: &str, instance: &str) -> Result<()> {
    let pages = [
        "/ui".to_string(),
        "/ui/plugins".into(),
        "/ui/metrics".into(),
        format!("/ui/instances/{instance}"),
        "/ui/directives".into(),
    ];
    for page in &pages {
        let (status, body) = http_get(addr, page, "xtask")?;
        ensure!(status.split_whitespace().nth(1) == Some("200"), "GET {page}: {status}");
        ensure!(body.contains("</html>"), "GET {page}: not a whole page");
    }
    let fleet = json(addr, "/v1/fleet?window=1h")?;
    let n = |v: &serde_json::Value| v.as_u64().map_or_else(|| "-".to_string(), |n| n.to_string());
    let groups = |list: &str| -> String {
        let groups = fleet[list].as_array().cloned().unwrap_or_default();
        let text: Vec<String> = groups
            .iter()
            .map(|g| format!("{} ({})", g["key"].as_str().unwrap_or("?"), n(&g["instances"])))
            .collect();
        text.join(", ")
    };
    println!(
        "
== the collector's dashboard: http://{addr}/ui (no JavaScript; admin view on loopback)"
    );
    println!(
        "  Fleet: {} instance(s), {} reports in the last hour; sonde {}; OS {}; arch {}; a bar \
         chart of reports per hour",
        n(&fleet["instances"]),
        n(&fleet["reports"]),
        groups("by_version"),
        groups("by_os"),
        groups("by_arch"),
    );
    println!("  Plugins (http://{addr}/ui/plugins):");
    for p in fleet["plugins"].as_array().into_iter().flatten() {
        let by = &p["disabled_by"];
        println!(
            "    {:<14} {} instance(s): running {}, off by rule {} / admin {} / operator {} / \
             host {}; busy µs/event p50 {}",
            p["plugin"].as_str().unwrap_or("?"),
            n(&p["instances"]),
            p["states"]["running"].as_u64().unwrap_or(0),
            n(&by["rule"]),
            n(&by["admin"]),
            n(&by["operator"]),
            n(&by["host"]),
            p["busy_us_per_event"]["p50"].as_f64().map_or("-".into(), |v| format!("{v:.2}")),
        );
    }
    println!(
        "  Metrics (http://{addr}/ui/metrics): {} series totals by label",
        fleet["metrics"].as_array().map_or(0, Vec::len)
    );
    println!(
        "  The instance (http://{addr}/ui/instances/{instance}): its latest reports, its \
         plugins' states, the directive the cost rule delivered"
    );
    println!(
        "  Directives in force (http://{addr}/ui/directives): add or delete, behind the admin token"
    );
    println!(
        "  Public view: with --admin-token set, visitors without it see only groups of at least \
         5 instances (`sonde-collector export --public DIR` writes the same as CSV and JSON)."
    );
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        println!("\npress Enter to stop the collector");
        let _ = std::io::stdin().read_line(&mut String::new());
    } else {
        println!(
            "\nthe collector stops with the demo; to browse its data again: \
             target/debug/sonde-collector --listen 127.0.0.1:8080 --db target/demo/collector.db \
             and open http://127.0.0.1:8080/ui"
        );
    }
    Ok(())
}

fn free_addr() -> Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

fn wait_for_port(addr: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        ensure!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A plain HTTP/1.0 GET on loopback: (status line, body).
fn http_get(addr: &str, path: &str, user_agent: &str) -> Result<(String, String)> {
    let mut stream = TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: {user_agent}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((head.lines().next().unwrap_or("").to_string(), body.to_string()))
}

/// `n` requests over the routes and user agents; returns how many succeeded.
fn burst(addr: &str, n: usize) -> Result<usize> {
    let mut ok = 0;
    for i in 0..n {
        let (status, _) =
            http_get(addr, PATHS[i % PATHS.len()], USER_AGENTS[(i / 3) % USER_AGENTS.len()])?;
        let code = status.split_whitespace().nth(1).unwrap_or("");
        ok += usize::from(code == "200" || code == "404");
    }
    Ok(ok)
}

fn json(addr: &str, path: &str) -> Result<serde_json::Value> {
    let (status, body) = http_get(addr, path, "xtask")?;
    ensure!(status.split_whitespace().nth(1) == Some("200"), "GET {path}: {status}");
    Ok(serde_json::from_str(&body)?)
}

/// The stored reports of `instance`, newest first.
fn stored(addr: &str, instance: &str) -> Result<Vec<serde_json::Value>> {
    let v = json(addr, &format!("/v1/instances/{instance}/reports?limit=100"))?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Waits (20 s at most) until the one instance's reports satisfy `done`.
fn wait_for(addr: &str, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let instances = json(addr, "/v1/instances")?;
        if let Some(id) = instances.get(0).and_then(|i| i["instance_id"].as_str())
            && done(&stored(addr, id)?)
        {
            return Ok(id.to_string());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn plugin_state<'a>(report: &'a serde_json::Value, name: &str) -> &'a str {
    report["plugins"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .and_then(|p| p["state"].as_str())
        .unwrap_or("?")
}

fn print_report(title: &str, r: &serde_json::Value) {
    println!("\n== {title}");
    println!(
        "report {} from instance {}: {} events recorded, {} dropped",
        r["report_id"].as_str().unwrap_or("?"),
        r["instance_id"].as_str().unwrap_or("?"),
        r["buffer"]["recorded"],
        r["buffer"]["dropped"]
    );
    for p in r["plugins"].as_array().into_iter().flatten() {
        let state = p["state"].as_str().unwrap_or("?");
        let reason = p["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
        println!(
            "  {} [{state}]{reason}: {} events, {} µs",
            p["name"].as_str().unwrap_or("?"),
            p["cost"]["events"],
            p["cost"]["busy_us"]
        );
        for m in p["metrics"].as_array().into_iter().flatten().take(6) {
            let labels: Vec<String> = m["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                .collect();
            let value = if m["value"].is_null() {
                format!("count={}", m["count"])
            } else {
                m["value"].to_string()
            };
            println!("    {}{{{}}} {value}", m["name"].as_str().unwrap_or("?"), labels.join(","));
        }
    }
}
