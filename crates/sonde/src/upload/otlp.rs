//! OTLP/HTTP export: the same reports as an `ExportMetricsServiceRequest`
//! in protobuf, for endpoints that speak OpenTelemetry instead of sonde's
//! own protocol (`protocol = "otlp"`).
//!
//! The spool, the rate limits and the backoff are the uploader's; only the
//! body and the meaning of the answer differ. Per the OTLP/HTTP spec, only
//! 429, 502, 503 and 504 (and network failures) are retried, honouring
//! `Retry-After`; any other status drops the batch, and a `partial_success`
//! is counted, never retried.
//!
//! Mapping: one `ResourceMetrics` per report (the instance, the host facts
//! the report carries, the ident channel's `sonde.ident.contact` and
//! `sonde.ident.description` when the operator set them), one scope per plugin (its name and version), one per
//! application source, and a `sonde` scope with the runtime's own counters
//! (events recorded, processed and dropped; per-plugin cost; delivery).
//! Values are cumulative since `started`, as in the report.

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric as PbMetric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use sonde_core::{Metric, MetricKind, MetricValue, Report, ReportBatch};

/// The request's `Content-Type`.
pub(crate) const CONTENT_TYPE: &str = "application/x-protobuf";
/// The scope of the runtime's own metrics.
const SELF_SCOPE: &str = "sonde";

/// Encodes a spool batch (`{"reports":[...]}`) as an OTLP protobuf body.
pub(crate) fn encode(batch_json: &[u8], service: &str) -> Result<Vec<u8>, String> {
    let batch = ReportBatch::from_json(batch_json).map_err(|e| format!("spooled batch: {e}"))?;
    Ok(encode_reports(&batch.reports, service))
}

/// The OTLP body (protobuf, before gzip) that a `protocol = "otlp"`
/// endpoint receives for `reports`, with `service` as `service.name` (the
/// manifest's `service_name`): what `sonde preview --otlp` prints.
pub fn encode_reports(reports: &[Report], service: &str) -> Vec<u8> {
    request(reports, service).encode_to_vec()
}

/// The OTLP request for some reports.
pub(crate) fn request(reports: &[Report], service: &str) -> ExportMetricsServiceRequest {
    let resource_metrics = reports.iter().map(|r| resource_metrics(r, service)).collect();
    ExportMetricsServiceRequest { resource_metrics }
}

/// Data points the endpoint rejected and its message, from a 2xx answer's
/// `partial_success`; `None` when everything was accepted (or the body is
/// empty or not an OTLP response).
pub(crate) fn partial_success(body: &[u8]) -> Option<(u64, String)> {
    let response = ExportMetricsServiceResponse::decode(body).ok()?;
    let partial = response.partial_success?;
    let rejected = u64::try_from(partial.rejected_data_points).unwrap_or(0);
    (rejected > 0 || !partial.error_message.is_empty())
        // The message is the endpoint's: no control characters reach a log line.
        .then(|| {
            (
                rejected,
                partial.error_message.chars().filter(|c| !c.is_control()).take(512).collect(),
            )
        })
}

fn resource_metrics(report: &Report, service: &str) -> ResourceMetrics {
    let mut attributes = vec![
        kv("service.name", service),
        kv("service.instance.id", &report.instance_id.to_string()),
        kv("telemetry.sdk.name", "sonde"),
        kv("telemetry.sdk.language", "rust"),
        kv("telemetry.sdk.version", &report.host.sonde_version),
        kv("os.type", &report.host.os),
        kv("host.arch", &report.host.arch),
    ];
    if let Some(id) = &report.installation_id {
        attributes.push(kv("sonde.installation.id", id));
    }
    // The ident channel, only as the operator set it.
    if let Some(ident) = &report.ident {
        if let Some(contact) = &ident.contact {
            attributes.push(kv("sonde.ident.contact", contact));
        }
        if let Some(description) = &ident.description {
            attributes.push(kv("sonde.ident.description", description));
        }
    }
    let at = Times {
        start: report.started.as_deref().map_or(0, unix_nanos),
        now: unix_nanos(&report.timestamp),
    };
    let mut scopes = vec![self_metrics(report, at)];
    for plugin in report.plugins.iter().filter(|p| !p.metrics.is_empty()) {
        scopes.push(ScopeMetrics {
            scope: Some(scope(&plugin.name, &plugin.version)),
            metrics: merge_by_name(plugin.metrics.iter().filter_map(|m| metric(m, at)).collect()),
            schema_url: String::new(),
        });
    }
    for source in report.sources.iter().filter(|s| !s.metrics.is_empty()) {
        scopes.push(ScopeMetrics {
            scope: Some(scope(&source.name, "")),
            metrics: merge_by_name(source.metrics.iter().filter_map(|m| metric(m, at)).collect()),
            schema_url: String::new(),
        });
    }
    ResourceMetrics {
        resource: Some(Resource { attributes, ..Default::default() }),
        scope_metrics: scopes,
        schema_url: String::new(),
    }
}

#[derive(Clone, Copy)]
struct Times {
    start: u64,
    now: u64,
}

/// The runtime's own counters (`own.rs`), so a dashboard on the OTLP side
/// sees drops and failures as plainly as a sonde collector does.
fn self_metrics(report: &Report, at: Times) -> ScopeMetrics {
    let metrics = crate::own::own_metrics(report)
        .into_iter()
        .map(|o| {
            let attrs: Vec<(&str, &str)> = o.label.into_iter().collect();
            own(o.name, o.unit, &attrs, o.value, at, o.counter)
        })
        .collect();
    ScopeMetrics {
        scope: Some(scope(SELF_SCOPE, &report.host.sonde_version)),
        metrics: merge_by_name(metrics),
        schema_url: String::new(),
    }
}

/// Puts the data points of metrics with the same name and kind into one
/// metric, as OTLP expects (one metric per name and scope). Linear: a source
/// may report a thousand series.
fn merge_by_name(metrics: Vec<PbMetric>) -> Vec<PbMetric> {
    let mut out: Vec<PbMetric> = Vec::with_capacity(metrics.len());
    let mut index: HashMap<(String, u8), usize> = HashMap::new();
    for m in metrics {
        let kind = match &m.data {
            Some(Data::Sum(_)) => 1,
            Some(Data::Gauge(_)) => 2,
            Some(Data::Histogram(_)) => 3,
            _ => 0,
        };
        let Some(&i) = index.get(&(m.name.clone(), kind)) else {
            index.insert((m.name.clone(), kind), out.len());
            out.push(m);
            continue;
        };
        match (&mut out[i].data, m.data) {
            (Some(Data::Sum(a)), Some(Data::Sum(b))) => a.data_points.extend(b.data_points),
            (Some(Data::Gauge(a)), Some(Data::Gauge(b))) => a.data_points.extend(b.data_points),
            (Some(Data::Histogram(a)), Some(Data::Histogram(b))) => {
                a.data_points.extend(b.data_points)
            }
            // Same key, so same kind: cannot happen.
            _ => {}
        }
    }
    out
}

/// One report series as an OTLP metric with one data point. Plugins and
/// sources report each series separately; series of the same metric are
/// merged afterwards. `None` for a value of a shape only a reader keeps
/// ([`MetricValue::Other`], which this host never makes).
fn metric(m: &Metric, at: Times) -> Option<PbMetric> {
    let attributes: Vec<KeyValue> = m.labels.iter().map(|(k, v)| kv(k, v)).collect();
    let data = match (&m.value, m.kind) {
        (MetricValue::Scalar { value }, MetricKind::Counter) => Data::Sum(Sum {
            data_points: vec![number(attributes, *value, at, true)],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        (MetricValue::Scalar { value }, _) => {
            Data::Gauge(Gauge { data_points: vec![number(attributes, *value, at, false)] })
        }
        (MetricValue::Histogram { count, sum, bounds, buckets }, _) => Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes,
                start_time_unix_nano: at.start,
                time_unix_nano: at.now,
                count: *count,
                sum: Some(*sum),
                bucket_counts: buckets.clone(),
                explicit_bounds: bounds.clone(),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
        (MetricValue::Other(_), _) => return None,
    };
    Some(PbMetric {
        name: m.name.clone(),
        unit: m.unit.clone(),
        data: Some(data),
        ..Default::default()
    })
}

/// One of the runtime's own values: a cumulative sum when `counter`, else a
/// gauge.
fn own(
    name: &str,
    unit: &str,
    attrs: &[(&str, &str)],
    value: u64,
    at: Times,
    counter: bool,
) -> PbMetric {
    let point = NumberDataPoint {
        attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        start_time_unix_nano: if counter { at.start } else { 0 },
        time_unix_nano: at.now,
        value: Some(number_data_point::Value::AsInt(i64::try_from(value).unwrap_or(i64::MAX))),
        ..Default::default()
    };
    let data = if counter {
        Data::Sum(Sum {
            data_points: vec![point],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })
    } else {
        Data::Gauge(Gauge { data_points: vec![point] })
    };
    PbMetric { name: name.into(), unit: unit.into(), data: Some(data), ..Default::default() }
}

fn number(attributes: Vec<KeyValue>, value: f64, at: Times, cumulative: bool) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: if cumulative { at.start } else { 0 },
        time_unix_nano: at.now,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn scope(name: &str, version: &str) -> InstrumentationScope {
    InstrumentationScope { name: name.into(), version: version.into(), ..Default::default() }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// An RFC 3339 time as nanoseconds since the epoch; 0 if unreadable (OTLP's
/// "unknown").
fn unix_nanos(rfc3339: &str) -> u64 {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess;
    use sonde_core::{BufferStats, PluginCost, PluginReport, PluginState, SourceReport};
    use uuid::Uuid;

    use super::*;

    fn series(name: &str, kind: MetricKind, label: &str, value: MetricValue) -> Metric {
        let labels = BTreeMap::from([("status".to_string(), label.to_string())]);
        Metric { name: name.into(), kind, unit: "1".into(), labels, value }
    }

    fn report() -> Report {
        let buffer = BufferStats {
            capacity: 8,
            recorded: 10,
            processed: 7,
            dropped: 3,
            ..Default::default()
        };
        let plugin = PluginReport {
            name: "http-status".into(),
            version: "0.1.0".into(),
            state: PluginState::Running,
            reason: None,
            until: None,
            last_failure: None,
            disabled_metrics: vec![],
            denied_metrics: vec![],
            cost: PluginCost { events: 7, denied_points: 2, ..Default::default() },
            metrics: vec![
                series(
                    "http.requests",
                    MetricKind::Counter,
                    "2xx",
                    MetricValue::Scalar { value: 5.0 },
                ),
                series(
                    "http.requests",
                    MetricKind::Counter,
                    "5xx",
                    MetricValue::Scalar { value: 2.0 },
                ),
                series(
                    "http.inflight",
                    MetricKind::Gauge,
                    "all",
                    MetricValue::Scalar { value: 1.5 },
                ),
                series(
                    "http.latency",
                    MetricKind::Histogram,
                    "all",
                    MetricValue::Histogram {
                        count: 3,
                        sum: 12.0,
                        bounds: vec![5.0],
                        buckets: vec![2, 1],
                    },
                ),
            ],
        };
        let mut r = Report::new(Uuid::new_v4(), buffer, vec![plugin]);
        r.timestamp = "2026-12-01T10:00:00Z".into();
        r.started = Some("2026-12-01T09:00:00Z".into());
        r.sources = vec![SourceReport {
            name: "metrics".into(),
            overflow_series: 1,
            dropped_values: 0,
            invalid_series: 0,
            metrics: vec![series(
                "app.jobs",
                MetricKind::Counter,
                "ok",
                MetricValue::Scalar { value: 4.0 },
            )],
        }];
        r
    }

    fn attr(kvs: &[KeyValue], key: &str) -> Option<String> {
        kvs.iter().find(|kv| kv.key == key).and_then(|kv| match &kv.value.as_ref()?.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
    }

    #[test]
    fn a_report_becomes_one_resource_with_a_scope_per_plugin_and_source() {
        let r = report();
        let batch = serde_json::to_vec(&ReportBatch { reports: vec![r.clone()] }).expect("json");
        let body = encode(&batch, "checkout").expect("encodes");
        let req = ExportMetricsServiceRequest::decode(body.as_slice()).expect("valid protobuf");
        assert_eq!(req.resource_metrics.len(), 1);
        let rm = &req.resource_metrics[0];
        let res = rm.resource.as_ref().expect("resource");
        assert_eq!(attr(&res.attributes, "service.instance.id"), Some(r.instance_id.to_string()));
        assert_eq!(attr(&res.attributes, "service.name").as_deref(), Some("checkout"));
        let scopes: Vec<&str> = rm
            .scope_metrics
            .iter()
            .map(|s| s.scope.as_ref().map_or("", |s| s.name.as_str()))
            .collect();
        assert_eq!(scopes, ["sonde", "http-status", "metrics"]);

        let plugin = &rm.scope_metrics[1];
        assert_eq!(plugin.scope.as_ref().map(|s| s.version.as_str()), Some("0.1.0"));
        let names: Vec<&str> = plugin.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["http.requests", "http.inflight", "http.latency"],
            "series merged by name"
        );
        let start = unix_nanos("2026-12-01T09:00:00Z");
        let now = unix_nanos("2026-12-01T10:00:00Z");
        assert_eq!(now - start, 3600 * 1_000_000_000);
        let Some(Data::Sum(sum)) = &plugin.metrics[0].data else { panic!("a sum") };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        let points: Vec<(Option<String>, Option<number_data_point::Value>, u64, u64)> = sum
            .data_points
            .iter()
            .map(|p| {
                (attr(&p.attributes, "status"), p.value, p.start_time_unix_nano, p.time_unix_nano)
            })
            .collect();
        assert_eq!(
            points,
            [
                (Some("2xx".into()), Some(number_data_point::Value::AsDouble(5.0)), start, now),
                (Some("5xx".into()), Some(number_data_point::Value::AsDouble(2.0)), start, now),
            ]
        );
        let Some(Data::Gauge(g)) = &plugin.metrics[1].data else { panic!("a gauge") };
        assert_eq!(g.data_points[0].value, Some(number_data_point::Value::AsDouble(1.5)));
        let Some(Data::Histogram(h)) = &plugin.metrics[2].data else { panic!("a histogram") };
        let p = &h.data_points[0];
        assert_eq!(
            (p.count, p.sum, &p.bucket_counts, &p.explicit_bounds),
            (3, Some(12.0), &vec![2, 1], &vec![5.0])
        );

        let own = &rm.scope_metrics[0];
        let value = |name: &str| {
            let m = own.metrics.iter().find(|m| m.name == name).expect(name);
            let Some(Data::Sum(s)) = &m.data else { panic!("{name} is a sum") };
            s.data_points
                .iter()
                .map(|p| match p.value {
                    Some(number_data_point::Value::AsInt(v)) => v,
                    _ => -1,
                })
                .sum::<i64>()
        };
        assert_eq!((value("sonde.events.recorded"), value("sonde.events.dropped")), (10, 3));
        assert_eq!(value("sonde.plugin.events"), 7);
        assert_eq!(value("sonde.plugin.points_denied"), 2);
        assert_eq!(attr(&res.attributes, "sonde.ident.contact"), None, "no ident unless set");
        assert_eq!(value("sonde.source.overflow"), 1);
    }

    #[test]
    fn series_merge_by_name_and_kind_and_none_is_lost() {
        let mut r = report();
        let scalar = |v| MetricValue::Scalar { value: v };
        r.sources[0].metrics = vec![
            series("app.x", MetricKind::Counter, "a", scalar(1.0)),
            series("app.x", MetricKind::Gauge, "a", scalar(2.0)),
            series("app.x", MetricKind::Counter, "b", scalar(3.0)),
        ];
        let req = request(&[r], "sonde");
        let source = &req.resource_metrics[0].scope_metrics[2];
        let points: Vec<(&str, usize)> = source
            .metrics
            .iter()
            .map(|m| match &m.data {
                Some(Data::Sum(s)) => ("sum", s.data_points.len()),
                Some(Data::Gauge(g)) => ("gauge", g.data_points.len()),
                _ => ("other", 0),
            })
            .collect();
        assert_eq!(points, [("sum", 2), ("gauge", 1)]);
    }

    #[test]
    fn the_ident_channel_becomes_resource_attributes_as_set() {
        let mut r = report();
        r.ident =
            Some(sonde_core::Ident { contact: Some("ops@example.com".into()), description: None });
        let req = request(&[r], "sonde");
        let res = req.resource_metrics[0].resource.as_ref().expect("resource");
        assert_eq!(
            attr(&res.attributes, "sonde.ident.contact").as_deref(),
            Some("ops@example.com")
        );
        assert_eq!(attr(&res.attributes, "sonde.ident.description"), None);
    }

    #[test]
    fn a_batch_of_reports_is_one_request() {
        let batch = ReportBatch { reports: vec![report(), report(), report()] };
        let body = encode(&serde_json::to_vec(&batch).expect("json"), "sonde").expect("encodes");
        let req = ExportMetricsServiceRequest::decode(body.as_slice()).expect("valid");
        assert_eq!(req.resource_metrics.len(), 3);
        assert!(encode(b"{not json", "sonde").is_err());
    }

    #[test]
    fn partial_success_is_read_from_the_answer() {
        let body = ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 4,
                error_message: "bad\nname".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            partial_success(&body),
            Some((4, "badname".into())),
            "control characters dropped"
        );
        assert_eq!(partial_success(&ExportMetricsServiceResponse::default().encode_to_vec()), None);
        assert_eq!(partial_success(b""), None, "an empty 200 is full success");
        assert_eq!(partial_success(b"\xff\xff\xff"), None, "not protobuf: nothing to count");
    }
}
