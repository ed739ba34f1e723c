//! Constructors for the declarations a collector returns from `info`.

use crate::bindings::sonde::collector::types::{
    EventDecl, FieldDecl, FieldType, MetricDecl, MetricKind,
};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl MetricDecl {
    fn with_kind(
        kind: MetricKind,
        name: &str,
        unit: &str,
        description: &str,
        label_keys: &[&str],
        buckets: &[f64],
    ) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            unit: unit.to_owned(),
            description: description.to_owned(),
            label_keys: strings(label_keys),
            buckets: buckets.to_vec(),
        }
    }

    /// A counter: `collect` returns increments.
    ///
    /// `unit` is e.g. `"1"` for plain counts or `"bytes"`; `label_keys` are
    /// the keys whose values every [`MetricPoint`](crate::MetricPoint) of
    /// this metric carries, in this order.
    pub fn counter(name: &str, unit: &str, description: &str, label_keys: &[&str]) -> Self {
        Self::with_kind(MetricKind::Counter, name, unit, description, label_keys, &[])
    }

    /// A gauge: `collect` returns the current value.
    pub fn gauge(name: &str, unit: &str, description: &str, label_keys: &[&str]) -> Self {
        Self::with_kind(MetricKind::Gauge, name, unit, description, label_keys, &[])
    }

    /// A histogram over `buckets`: ascending, finite upper bounds (inclusive);
    /// an implicit last bucket holds everything above the last bound.
    pub fn histogram(
        name: &str,
        unit: &str,
        description: &str,
        label_keys: &[&str],
        buckets: &[f64],
    ) -> Self {
        Self::with_kind(MetricKind::Histogram, name, unit, description, label_keys, buckets)
    }
}

impl FieldDecl {
    /// A field named `name` read as `ty`.
    pub fn new(name: &str, ty: FieldType) -> Self {
        Self { name: name.to_owned(), type_: ty }
    }
}

impl EventDecl {
    /// An event kind and the fields read from it, in the order in which the
    /// batch carries their columns.
    pub fn new(kind: &str, fields: &[(&str, FieldType)]) -> Self {
        Self {
            kind: kind.to_owned(),
            fields: fields.iter().map(|(name, ty)| FieldDecl::new(name, *ty)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_every_field() {
        let h = MetricDecl::histogram("a.b", "us", "d", &["route"], &[1.0, 2.0]);
        assert_eq!(h.kind, MetricKind::Histogram);
        assert_eq!(h.label_keys, ["route"]);
        assert_eq!(h.buckets, [1.0, 2.0]);
        let c = MetricDecl::counter("c", "1", "d", &[]);
        assert_eq!(c.kind, MetricKind::Counter);
        assert!(c.buckets.is_empty());
        assert_eq!(MetricDecl::gauge("g", "1", "d", &[]).kind, MetricKind::Gauge);
        let e = EventDecl::new("http.request", &[("status", FieldType::Int)]);
        assert_eq!(e.fields, [FieldDecl::new("status", FieldType::Int)]);
    }
}
