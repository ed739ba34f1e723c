//! The [`Collector`] trait and the [`export_plugin!`](crate::export_plugin)
//! macro.

use crate::batch::Batch;
use crate::bindings::sonde::collector::types::{EventBatch, MetricPoint, PluginInfo};
use std::cell::RefCell;
use std::thread::LocalKey;

/// A metric collector, written as a plain Rust type holding its state.
///
/// Export it with [`export_plugin!`](crate::export_plugin). The macro keeps one
/// instance per component instance (wasm32-unknown-unknown is
/// single-threaded), created by [`Collector::new`] on the first `on-events` or
/// `collect` call, after the host has called `info`.
///
/// A plugin that panics traps: the host drops the instance and starts a new
/// one, losing at most one collection window.
pub trait Collector: Sized + 'static {
    /// Describes the plugin: name, version, the event fields it reads and the
    /// metrics it reports. Called once per instance, first; the host freezes
    /// the answer, so it must not vary.
    fn info() -> PluginInfo;

    /// Creates the plugin's state. Read configuration ([`crate::config`])
    /// here.
    fn new() -> Self;

    /// Consumes a batch of events of one declared kind ([`Batch::kind`]).
    fn on_events(&mut self, batch: &Batch<'_>);

    /// Appends what changed since the previous `collect` to `out`: counter
    /// and histogram increments, current gauge values. Usually just drains
    /// the plugin's [`Counters`](crate::Counters) and
    /// [`Histograms`](crate::Histograms).
    fn collect(&mut self, out: &mut Vec<MetricPoint>);
}

/// Implementation of `on-events` for [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn on_events<T: Collector>(state: &'static LocalKey<RefCell<Option<T>>>, batch: EventBatch) {
    state.with_borrow_mut(|s| {
        s.get_or_insert_with(T::new).on_events(&Batch::new(&batch));
    });
}

/// Implementation of `collect` for [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn collect<T: Collector>(state: &'static LocalKey<RefCell<Option<T>>>) -> Vec<MetricPoint> {
    state.with_borrow_mut(|s| {
        let mut out = Vec::new();
        s.get_or_insert_with(T::new).collect(&mut out);
        out
    })
}

/// Exports a [`Collector`] as the component's `sonde:collector/collector`
/// interface. Use it once per plugin crate, at the crate root:
///
/// ```ignore
/// sonde_sdk::export_plugin!(MyCollector);
/// ```
///
/// The exports are only emitted when compiling for `wasm32`; on other targets
/// the macro still type-checks the plugin, so `cargo test` works natively.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        const _: () = {
            $crate::__private::thread_local! {
                static STATE: $crate::__private::RefCell<$crate::__private::Option<$ty>> =
                    const { $crate::__private::RefCell::new($crate::__private::Option::None) };
            }

            #[allow(dead_code, reason = "only used by the wasm32 exports")]
            struct SondeExport;

            impl $crate::Guest for SondeExport {
                fn info() -> $crate::PluginInfo {
                    <$ty as $crate::Collector>::info()
                }

                fn on_events(batch: $crate::EventBatch) {
                    $crate::__private::on_events::<$ty>(&STATE, batch)
                }

                fn collect() -> $crate::__private::Vec<$crate::MetricPoint> {
                    $crate::__private::collect::<$ty>(&STATE)
                }
            }

            #[cfg(target_arch = "wasm32")]
    $crate::bindings::export_collector!(SondeExport with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    use crate::{
        Batch, Collector, Column, ColumnData, Counters, EventBatch, EventDecl, FieldType, Guest,
        MetricDecl, MetricPoint, MetricValue, PluginInfo,
    };

    #[derive(Default)]
    struct Count {
        counters: Counters,
    }

    impl Collector for Count {
        fn info() -> PluginInfo {
            PluginInfo {
                name: "count".into(),
                version: "0".into(),
                description: "counts".into(),
                events: vec![EventDecl::new("e", &[("n", FieldType::Int)])],
                metrics: vec![MetricDecl::counter("events", "1", "events", &[])],
            }
        }

        fn new() -> Self {
            Self::default()
        }

        fn on_events(&mut self, batch: &Batch<'_>) {
            // Each row stands for its weight in events.
            let sum: i64 = batch
                .int(0)
                .iter()
                .zip(batch.weights())
                .filter_map(|(v, w)| v.map(|v| v * w as i64))
                .sum();
            self.counters.add(0, &[], sum as f64);
        }

        fn collect(&mut self, out: &mut Vec<MetricPoint>) {
            self.counters.drain(out);
        }
    }

    // The macro expands to a `Guest` impl (and, on wasm32, the exports).
    mod exported {
        crate::export_plugin!(super::Count);
    }

    #[test]
    fn adapter_keeps_state_between_calls() {
        let batch = EventBatch {
            kind: 0,
            len: 3,
            columns: vec![Column { data: ColumnData::Int(vec![1, 2, 3]), missing: vec![2] }],
            weights: vec![2, 1, 1],
        };
        thread_local! {
            static STATE: std::cell::RefCell<Option<Count>> = const { std::cell::RefCell::new(None) };
        }
        super::on_events::<Count>(&STATE, batch.clone());
        super::on_events::<Count>(&STATE, batch);
        let out = super::collect::<Count>(&STATE);
        assert_eq!(out.len(), 1);
        // Rows 1 (weight 2) and 2 (weight 1), twice: (1 * 2 + 2) * 2.
        assert_eq!(out[0].value, MetricValue::Counter(8.0));
        assert!(super::collect::<Count>(&STATE).is_empty());
    }

    #[test]
    fn guest_trait_is_implementable_directly() {
        struct Raw;
        impl Guest for Raw {
            fn info() -> PluginInfo {
                Count::info()
            }
            fn on_events(_: EventBatch) {}
            fn collect() -> Vec<MetricPoint> {
                Vec::new()
            }
        }
        assert_eq!(<Raw as Guest>::info().name, "count");
    }
}
