//! Host bindings for the `sonde:collector` WIT world, generated once here and
//! used by every other module.

#![allow(missing_docs, reason = "generated from wit/collector.wit, which documents every item")]
#![allow(missing_debug_implementations, reason = "generated code")]

wasmtime::component::bindgen!({
    world: "metric-collector",
    path: "../../wit",
    additional_derives: [PartialEq],
});

pub(crate) use self::sonde::collector::types::{
    Column, ColumnData, EventBatch, FieldType, MetricDecl, MetricKind, MetricPoint, MetricValue,
    PluginInfo, StrColumn,
};

/// The interfaces a collector may import: the world's own, nothing else.
pub(crate) const ALLOWED_IMPORTS: &[&str] =
    &["sonde:collector/host@0.2.0", "sonde:collector/types@0.2.0"];

/// The interface a collector must export.
pub(crate) const REQUIRED_EXPORT: &str = "sonde:collector/collector@0.2.0";
