//! `http-status`: counts HTTP requests per method and status class.
//!
//! Reads the `method` (str) and `status` (int) fields of `http.request`
//! events and reports one counter, `http.requests` (unit `1`), labelled by:
//!
//! - `method`: one of `GET HEAD POST PUT DELETE PATCH OPTIONS CONNECT TRACE`,
//!   matched exactly (HTTP methods are case-sensitive), or `OTHER` for
//!   anything else and for events without a method. The label set is fixed,
//!   so a client sending made-up methods cannot blow up cardinality.
//! - `status_class`: `1xx` to `5xx` for statuses 100 to 599, `other` for
//!   statuses outside that range and for events without a status.
//!
//! `collect` returns the increments since the previous `collect`, one point
//! per (method, status_class) seen in that window. The plugin reads no
//! configuration.

use sonde_sdk::{
    Batch, Collector, Counters, EventDecl, FieldType, MetricDecl, MetricPoint, PluginInfo,
};

/// Methods reported by name, in label order; anything else is `OTHER`.
const METHODS: [&str; 9] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"];
/// Index of `OTHER` in the per-batch tally.
const OTHER_METHOD: usize = METHODS.len();
/// `status_class` labels; the last one is for statuses outside 100..=599.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Field columns, in the declared order.
const METHOD: usize = 0;
const STATUS: usize = 1;
/// Metric index of `http.requests`.
const REQUESTS: u32 = 0;

/// The collector's state: increments since the last `collect`.
#[derive(Debug, Default)]
pub struct HttpStatus {
    counters: Counters,
}

/// The `method` label index of a request method (`OTHER_METHOD` if unknown).
fn method_index(method: Option<&str>) -> usize {
    method.and_then(|m| METHODS.iter().position(|known| *known == m)).unwrap_or(OTHER_METHOD)
}

/// The `status_class` label index of a status code.
fn class_index(status: Option<i64>) -> usize {
    match status {
        Some(s @ 100..=599) => (s / 100 - 1) as usize,
        _ => CLASSES.len() - 1,
    }
}

impl Collector for HttpStatus {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "http-status".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "HTTP requests per method and status class (1xx..5xx, other).".into(),
            events: vec![EventDecl::new(
                "http.request",
                &[("method", FieldType::Str), ("status", FieldType::Int)],
            )],
            metrics: vec![MetricDecl::counter(
                "http.requests",
                "1",
                "HTTP requests, by method and status class.",
                &["method", "status_class"],
            )],
        }
    }

    fn new() -> Self {
        Self::default()
    }

    fn on_events(&mut self, batch: &Batch<'_>) {
        // Tally the batch in a fixed table, classifying each distinct method
        // string once, then fold the table into the counters.
        let mut tally = [[0u64; CLASSES.len()]; METHODS.len() + 1];
        let statuses = batch.int(STATUS);
        let methods = batch.str(METHOD);
        // Each row stands for its weight in requests (identical method and
        // status arrive merged).
        for (i, (m, n)) in methods.map_distinct(method_index).zip(batch.weights()).enumerate() {
            tally[m][class_index(statuses.get(i))] += n;
        }
        for (m, row) in tally.iter().enumerate() {
            let method = METHODS.get(m).copied().unwrap_or("OTHER");
            for (class, &n) in CLASSES.iter().zip(row) {
                if n > 0 {
                    self.counters.add(REQUESTS, &[method, class], n as f64);
                }
            }
        }
    }

    fn collect(&mut self, out: &mut Vec<MetricPoint>) {
        self.counters.drain(out);
    }
}

sonde_sdk::export_plugin!(HttpStatus);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_methods_and_statuses() {
        assert_eq!(METHODS[method_index(Some("DELETE"))], "DELETE");
        assert_eq!(method_index(Some("get")), OTHER_METHOD);
        assert_eq!(method_index(Some("PROPFIND")), OTHER_METHOD);
        assert_eq!(method_index(None), OTHER_METHOD);
        let class = |s| CLASSES[class_index(s)];
        assert_eq!(class(Some(100)), "1xx");
        assert_eq!(class(Some(204)), "2xx");
        assert_eq!(class(Some(399)), "3xx");
        assert_eq!(class(Some(404)), "4xx");
        assert_eq!(class(Some(599)), "5xx");
        assert_eq!(class(Some(600)), "other");
        assert_eq!(class(Some(99)), "other");
        assert_eq!(class(Some(-1)), "other");
        assert_eq!(class(None), "other");
    }
}
