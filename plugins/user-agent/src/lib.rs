//! `user-agent`: counts HTTP requests per user-agent family.
//!
//! Reads the `user_agent` (str) field of `http.request` events and reports
//! one counter, `http.user_agents` (unit `1`), labelled by `family`. Raw
//! user-agent strings never leave the plugin.
//!
//! # Classification
//!
//! Each user agent is matched against these rules, first match wins; every
//! substring test is ASCII case-insensitive:
//!
//! | # | family    | rule                                                              |
//! |---|-----------|-------------------------------------------------------------------|
//! | 1 | `none`    | no `user_agent` field, or only whitespace                         |
//! | 2 | `bot`     | contains `bot`, `spider` or `crawl` (before browsers: crawlers pose as them) |
//! | 3 | `curl`    | starts with `curl/`                                               |
//! | 4 | `wget`    | starts with `wget/`                                               |
//! | 5 | `python`  | starts with `python` (`python-requests/`, `Python-urllib/`, `python-httpx/`) or contains `aiohttp/` |
//! | 6 | `go`      | starts with `go-http-client/`                                     |
//! | 7 | `java`    | starts with `java/` or `java-http-client/`, or contains `okhttp/` or `apache-httpclient/` |
//! | 8 | `node`    | starts with `node` (`node-fetch/`, `node/`), or contains `axios/` or `undici` |
//! | 9 | `edge`    | contains `edg/`, `edge/`, `edga/` or `edgios/` (before chrome and safari: Edge claims both) |
//! |10 | `opera`   | contains `opr/` or `opera` (before chrome: Opera claims Chrome)   |
//! |11 | `firefox` | contains `firefox/` or `fxios/`, or both `gecko/` and `rv:` (before safari: Firefox on iOS claims Safari) |
//! |12 | `chrome`  | contains `chrome/`, `chromium/` or `crios/` (before safari: Chrome claims Safari) |
//! |13 | `safari`  | contains `safari/`, or both `applewebkit/` and `version/`          |
//! |14 | `other`   | anything else                                                     |
//!
//! The host may cut long strings (sonde keeps a fixed number of string bytes
//! per event, shared by all its fields), which removes the *end* of a browser
//! user agent. The rules therefore also accept tokens that come early:
//! Firefox's `Gecko/<date>` with `rv:`, Safari's `Version/` with
//! `AppleWebKit/`. Edge's `Edg/` token comes last and has no early stand-in: a
//! cut Edge user agent counts as `chrome`.
//!
//! # Top N, and how it meets delta semantics
//!
//! Config `top_n` (default 10; an invalid value logs a warning and uses the
//! default) bounds what is reported by name: at each `collect`, the families
//! are ranked by their *cumulative* count since the plugin instance started
//! (ties broken by the table order above; `other` never takes a slot), the
//! `top_n` first are reported under their own name and everything else under
//! `other`.
//!
//! `collect` must return increments, which can only be added, never moved, so
//! each `collect` reports the events *of this window* under the label the
//! family has *now*. When a family enters the top set, its earlier events
//! stay counted under `other`; when it leaves, its series stops growing and
//! its new events grow `other`. The host's cumulative series therefore always
//! sum to the number of requests seen, and each named series counts the
//! requests of that family while it was in the top set. The ranking restarts
//! with the instance (a plugin restart forgets the cumulative counts).

use std::collections::BTreeMap;

use sonde_sdk::{
    Batch, Collector, Counters, EventDecl, FieldType, MetricDecl, MetricPoint, PluginInfo,
    config_parse,
};

/// Families, in rule order (also the tie-break order of the ranking).
const FAMILIES: [&str; 14] = [
    "none", "bot", "curl", "wget", "python", "go", "java", "node", "edge", "opera", "firefox",
    "chrome", "safari", "other",
];
/// Index of `other` in [`FAMILIES`].
const OTHER: usize = FAMILIES.len() - 1;

/// Default for the `top_n` config key.
const DEFAULT_TOP_N: usize = 10;
/// Field column of `user_agent`.
const USER_AGENT: usize = 0;
/// Metric index of `http.user_agents`.
const USER_AGENTS: u32 = 0;

/// The family index of a user agent, per the table in the crate docs.
fn classify(user_agent: Option<&str>) -> usize {
    let ua = match user_agent.map(str::trim) {
        None | Some("") => return 0,
        Some(ua) => ua.to_ascii_lowercase(),
    };
    let has = |needles: &[&str]| needles.iter().any(|n| ua.contains(n));
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| ua.starts_with(p));
    let family = if has(&["bot", "spider", "crawl"]) {
        "bot"
    } else if starts(&["curl/"]) {
        "curl"
    } else if starts(&["wget/"]) {
        "wget"
    } else if starts(&["python"]) || has(&["aiohttp/"]) {
        "python"
    } else if starts(&["go-http-client/"]) {
        "go"
    } else if starts(&["java/", "java-http-client/"]) || has(&["okhttp/", "apache-httpclient/"]) {
        "java"
    } else if starts(&["node"]) || has(&["axios/", "undici"]) {
        "node"
    } else if has(&["edg/", "edge/", "edga/", "edgios/"]) {
        "edge"
    } else if has(&["opr/", "opera"]) {
        "opera"
    } else if has(&["firefox/", "fxios/"]) || (has(&["gecko/"]) && has(&["rv:"])) {
        "firefox"
    } else if has(&["chrome/", "chromium/", "crios/"]) {
        "chrome"
    } else if has(&["safari/"]) || (has(&["applewebkit/"]) && has(&["version/"])) {
        "safari"
    } else {
        "other"
    };
    FAMILIES.iter().position(|f| *f == family).unwrap_or(OTHER)
}

/// User agents whose family is remembered across batches: a server sees the
/// same few hundred strings again and again, and classifying one (lowercase,
/// some thirty substring searches) costs tens of thousands of instructions.
/// When full, the cache is emptied and fills again: bounded by this many
/// entries of at most the host's per-event text limit each.
const MAX_CACHED: usize = 1024;

/// [`classify`] through `cache`.
fn classify_cached(cache: &mut BTreeMap<Box<str>, u8>, user_agent: Option<&str>) -> usize {
    let Some(ua) = user_agent else {
        return classify(None);
    };
    if let Some(&family) = cache.get(ua) {
        return usize::from(family);
    }
    let family = classify(Some(ua));
    if cache.len() >= MAX_CACHED {
        cache.clear();
    }
    // Fewer than 256 families: fits a u8.
    cache.insert(ua.into(), family as u8);
    family
}

/// The collector's state.
#[derive(Debug)]
pub struct UserAgent {
    /// How many families are reported by name.
    top_n: usize,
    /// Requests per family since the instance started (ranks the families).
    total: [u64; FAMILIES.len()],
    /// Requests per family since the last `collect`.
    window: [u64; FAMILIES.len()],
    /// Families of recently seen user agents (see [`MAX_CACHED`]).
    cache: BTreeMap<Box<str>, u8>,
}

impl UserAgent {
    fn with_top_n(top_n: usize) -> Self {
        Self {
            top_n,
            total: [0; FAMILIES.len()],
            window: [0; FAMILIES.len()],
            cache: BTreeMap::new(),
        }
    }

    /// Which families are reported by name now: the `top_n` with the highest
    /// cumulative count (ties in table order), never `other`.
    fn top_set(&self) -> [bool; FAMILIES.len()] {
        let mut ranked: Vec<usize> = (0..OTHER).filter(|&f| self.total[f] > 0).collect();
        // Stable sort: equal counts keep table order.
        ranked.sort_by_key(|&f| std::cmp::Reverse(self.total[f]));
        let mut top = [false; FAMILIES.len()];
        for &f in ranked.iter().take(self.top_n) {
            top[f] = true;
        }
        top
    }
}

impl Collector for UserAgent {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "user-agent".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "HTTP requests per user-agent family (curl, chrome, bot, ...); \
                          the `top_n` most frequent families by name, the rest as `other`."
                .into(),
            events: vec![EventDecl::new("http.request", &[("user_agent", FieldType::Str)])],
            metrics: vec![MetricDecl::counter(
                "http.user_agents",
                "1",
                "HTTP requests, by user-agent family.",
                &["family"],
            )],
        }
    }

    fn new() -> Self {
        Self::with_top_n(config_parse("top_n", DEFAULT_TOP_N))
    }

    fn on_events(&mut self, batch: &Batch<'_>) {
        // Each row stands for its weight in requests (identical user agents
        // arrive merged).
        let cache = &mut self.cache;
        let agents = batch.str(USER_AGENT);
        let families = agents.map_distinct(|ua| classify_cached(cache, ua));
        for (family, n) in families.zip(batch.weights()) {
            self.window[family] += n;
            self.total[family] += n;
        }
    }

    fn collect(&mut self, out: &mut Vec<MetricPoint>) {
        let top = self.top_set();
        let mut counters = Counters::new();
        for (f, n) in self.window.iter_mut().enumerate() {
            if *n > 0 {
                let label = if top[f] { FAMILIES[f] } else { "other" };
                counters.add(USER_AGENTS, &[label], *n as f64);
                *n = 0;
            }
        }
        counters.drain(out);
    }
}

sonde_sdk::export_plugin!(UserAgent);

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_sdk::MetricValue;

    fn family(ua: &str) -> &'static str {
        FAMILIES[classify(Some(ua))]
    }

    #[test]
    fn the_cache_gives_what_classify_gives_and_stays_bounded() {
        let mut cache = BTreeMap::new();
        let agents = ["curl/8.5.0", "Mozilla/5.0 (X11; rv:120.0) Gecko/20100101 Firefox/120.0"];
        for i in 0..3 * MAX_CACHED {
            let ua = format!("{} {i}", agents[i % 2]);
            for _ in 0..2 {
                assert_eq!(classify_cached(&mut cache, Some(&ua)), classify(Some(&ua)), "{ua}");
            }
            assert!(cache.len() <= MAX_CACHED);
        }
        assert_eq!(classify_cached(&mut cache, None), classify(None));
        // A family cached for one string is never given to another.
        assert_eq!(family("curl/8.5.0 7"), "curl");
        assert_eq!(FAMILIES[classify_cached(&mut cache, Some("curl/8.5.0 7"))], "curl");
    }

    #[test]
    fn classification_table() {
        let cases = [
            ("curl/8.5.0", "curl"),
            ("Wget/1.21.4", "wget"),
            ("python-requests/2.31.0", "python"),
            ("Python-urllib/3.11", "python"),
            ("Go-http-client/2.0", "go"),
            ("okhttp/4.12.0", "java"),
            ("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "node"),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
                "edge",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0",
                "opera",
            ),
            ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", "firefox"),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/120.0.0.0 Safari/537.36",
                "chrome",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) \
                 Version/17.2 Safari/605.1.15",
                "safari",
            ),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot"),
            (
                "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0) \
                 Chrome/116.0.1938.76 Safari/537.36",
                "bot",
            ),
            ("Baiduspider", "bot"),
            ("SomeCrawler/1.0", "bot"),
            ("Lynx/2.9.0dev.12 libwww-FM/2.14", "other"),
            // Cut by the host before the tokens that usually decide.
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Fire", "firefox"),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 \
                 (KHTML, like Gecko) Version/17.4 Mob",
                "safari",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/124.0.0.0 Safari/537.36 Ed",
                "chrome",
            ),
            ("   ", "none"),
        ];
        for (ua, want) in cases {
            assert_eq!(family(ua), want, "{ua}");
        }
        assert_eq!(FAMILIES[classify(None)], "none");
    }

    fn collect(p: &mut UserAgent) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        p.collect(&mut out);
        out.into_iter()
            .map(|pt| match pt.value {
                MetricValue::Counter(v) => (pt.labels[0].clone(), v),
                other => panic!("not a counter: {other:?}"),
            })
            .collect()
    }

    fn feed(p: &mut UserAgent, family: &str, n: u64) {
        let f = FAMILIES.iter().position(|x| *x == family).unwrap_or(OTHER);
        p.window[f] += n;
        p.total[f] += n;
    }

    #[test]
    fn top_n_folds_the_rest_into_other() {
        let mut p = UserAgent::with_top_n(2);
        feed(&mut p, "curl", 5);
        feed(&mut p, "chrome", 3);
        feed(&mut p, "safari", 3); // ties with chrome, later in the table
        feed(&mut p, "other", 1);
        let got = collect(&mut p);
        assert_eq!(got, [("chrome".into(), 3.0), ("curl".into(), 5.0), ("other".into(), 4.0)]);
        assert!(collect(&mut p).is_empty());

        // safari overtakes chrome: from now on it is reported by name; its
        // earlier events stay under `other`, and the totals stay consistent.
        feed(&mut p, "safari", 2);
        feed(&mut p, "chrome", 1);
        let got = collect(&mut p);
        assert_eq!(got, [("other".into(), 1.0), ("safari".into(), 2.0)]);
    }

    #[test]
    fn top_zero_reports_only_other() {
        let mut p = UserAgent::with_top_n(0);
        feed(&mut p, "curl", 5);
        feed(&mut p, "none", 1);
        assert_eq!(collect(&mut p), [("other".into(), 6.0)]);
    }
}
