//! Bounded copies out of a plugin: what `info` and `collect` return and what
//! `log` and `config` are passed is lifted only as far as a valid answer
//! reaches.
//!
//! The canonical-ABI lift of a call's results runs in host code after the
//! wasm returns, where no epoch deadline can stop it, and a guest controls
//! its cost: a `list<string>` of a million entries all pointing at the same
//! byte costs the guest 8 MB and the host a million `String`s, and a
//! million points may all share that list. The generated bindings lift
//! everything eagerly. The types here read a list's or a string's length
//! first (and check that it lies in the guest's memory, as the canonical ABI
//! requires) and copy at most the bound a valid answer obeys:
//!
//! - [`List`] lifts a list only when it is within [`Bound::max`] elements
//!   (the points of a `collect`: its first `max`), and keeps the guest's
//!   length, so the caller can count or refuse what was not copied;
//! - [`Text`] copies a string only when it fits its bound, and otherwise
//!   keeps only its length;
//! - [`Line`] copies the first [`MAX_LOG_LINE`] bytes of a log line, cut at
//!   a character boundary.
//!
//! # Why not `WasmList` / `WasmStr` for results
//!
//! wasmtime's lazy types would read the guest's memory *after* the call,
//! but wasmtime 48 runs the guest's `post-return` function inside
//! `TypedFunc::call` (`TypedFunc::post_return` is a deprecated no-op,
//! wasmtime PR 12498; issue 12467), and a wit-bindgen guest frees its answer
//! there: the allocator's bookkeeping then overwrites the first bytes of
//! every freed string and list. So results are lifted by these types
//! *during* the lift, before `post-return`. They implement wasmtime's
//! `ComponentType` and `Lift` by hand, with the items wasmtime exports for
//! its derive macros (`component::__internal`, outside its semver promise;
//! the workspace pins wasmtime to one exact version). Host-function
//! arguments have no `post-return` (the guest waits), but a log line is cut
//! before it is copied with [`Line`] for the same reason: `WasmStr` cannot
//! read a prefix.

use std::cell::Cell;
use std::marker::PhantomData;

use wasmtime::ValRaw;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext, wasmtime_environ,
};
use wasmtime::component::{ComponentType, Lift, WasmStr};

use super::host::MAX_LOG_LINE;
use super::info;
use crate::bindings::sonde::collector::types::HistogramDelta;
use crate::bindings::{FieldType, MetricDecl, MetricKind, MetricPoint, MetricValue, PluginInfo};

use wasmtime_environ::component::StringEncoding;

/// The bit of a `latin1+utf16` string's length that says it is UTF-16
/// (canonical ABI).
const UTF16_TAG: usize = 1 << 31;

/// The most a valid answer holds at one place: elements of a list, bytes
/// of a string.
pub(crate) trait Bound: 'static {
    /// The bound.
    fn max() -> usize;

    /// Whether a list longer than the bound still has its first `max()`
    /// elements lifted (the points of a `collect`, which are used); other
    /// over-long lists refuse or invalidate what holds them, so nothing of
    /// them is lifted.
    fn keep_prefix() -> bool {
        false
    }
}

macro_rules! bounds {
    ($($(#[$doc:meta])* $name:ident = $max:expr;)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;
        impl Bound for $name {
            fn max() -> usize {
                $max
            }
        }
    )*};
}

bounds! {
    /// A plugin's name or version, a unit, a label key.
    ShortText = info::MAX_SHORT_TEXT;
    /// A plugin's or a metric's description.
    Description = info::MAX_DESCRIPTION;
    /// An event kind.
    EventKindName = sonde_core::limits::MAX_EVENT_KIND_LEN;
    /// An event field's name.
    FieldName = sonde_core::limits::MAX_FIELD_NAME_LEN;
    /// A metric's name.
    MetricName = info::MAX_METRIC_NAME;
    /// Event kinds one plugin declares.
    EventDecls = info::MAX_EVENT_DECLS;
    /// Fields of one event kind.
    Fields = crate::event::MAX_FIELDS;
    /// Metrics one plugin declares.
    Metrics = info::MAX_METRICS;
    /// Label keys of one metric, and so label values of one point.
    LabelKeys = info::MAX_LABEL_KEYS;
    /// Bucket bounds of one histogram.
    Buckets = info::MAX_BUCKETS;
    /// Bucket counts of one histogram delta: one per bound, plus overflow.
    BucketCounts = info::MAX_BUCKETS + 1;
    /// A config key (`[plugin.config]` keys are at most this long).
    ConfigKey = sonde_core::limits::MAX_CONFIG_KEY_LEN;
    /// A label value: the plugin's `max_label_len`.
    LabelValue = COLLECT_CAPS.with(|c| c.get().label);
}

/// The points of one `collect`: the plugin's `max_points_per_collect`; the
/// first ones of a longer list are lifted, the rest counted as excess.
pub(crate) struct Points;

impl Bound for Points {
    fn max() -> usize {
        COLLECT_CAPS.with(|c| c.get().points)
    }

    fn keep_prefix() -> bool {
        true
    }
}

/// The plugin's own bounds on what `collect` returns, read by [`Points`]
/// and [`LabelValue`] while the call lifts its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CollectCaps {
    /// `limits.max_points_per_collect`.
    pub(crate) points: usize,
    /// `limits.max_label_len`.
    pub(crate) label: usize,
}

thread_local! {
    /// Set by [`with_caps`] around a `collect` call; zero otherwise, so a
    /// lift outside one copies nothing.
    static COLLECT_CAPS: Cell<CollectCaps> = const { Cell::new(CollectCaps { points: 0, label: 0 }) };
}

/// Runs `f` (a `collect` call, which lifts its result on this thread) with
/// `caps` as the bounds of [`Points`] and [`LabelValue`].
pub(crate) fn with_caps<R>(caps: CollectCaps, f: impl FnOnce() -> R) -> R {
    let before = COLLECT_CAPS.with(|c| c.replace(caps));
    let result = f();
    COLLECT_CAPS.with(|c| c.set(before));
    result
}

/// A `list<T>` of which at most `B::max()` elements were lifted (none when
/// it is longer, unless `B::keep_prefix()`).
pub(crate) struct List<T, B> {
    /// Every element, or when the list is over its bound the first
    /// `B::max()` (`B::keep_prefix()`) or none.
    pub(crate) items: Vec<T>,
    /// How many elements the guest's list has.
    pub(crate) len: usize,
    _bound: PhantomData<fn() -> B>,
}

impl<T, B: Bound> List<T, B> {
    /// Whether the guest's list is longer than its bound.
    pub(crate) fn over(&self) -> bool {
        self.len > B::max()
    }
}

/// The list at `ptr` with `len` elements: checked to lie in memory and be
/// aligned (canonical ABI), then lifted up to its bound.
fn lift_list<T: Lift, B: Bound>(
    cx: &mut LiftContext<'_>,
    ty: InterfaceType,
    ptr: usize,
    len: usize,
) -> wasmtime::Result<List<T, B>> {
    let InterfaceType::List(index) = ty else {
        wasmtime::bail!("expected a list type");
    };
    let elem = cx.types[index].element;
    let memory = cx.memory();
    match len.checked_mul(T::SIZE32).and_then(|n| ptr.checked_add(n)) {
        Some(end) if end <= memory.len() => {}
        _ => wasmtime::bail!("list pointer/length out of bounds of memory"),
    }
    if !ptr.is_multiple_of(T::ALIGN32 as usize) {
        wasmtime::bail!("list pointer is not aligned");
    }
    let max = B::max();
    let keep = if len <= max {
        len
    } else if B::keep_prefix() {
        max
    } else {
        0
    };
    let mut items = Vec::with_capacity(keep);
    for i in 0..keep {
        let at = ptr + i * T::SIZE32;
        items.push(T::linear_lift_from_memory(cx, elem, &memory[at..at + T::SIZE32])?);
    }
    Ok(List { items, len, _bound: PhantomData })
}

/// A pointer and length as the canonical ABI stores them in memory.
fn pointer_pair(bytes: &[u8]) -> wasmtime::Result<(usize, usize)> {
    let word = |at: usize| -> wasmtime::Result<usize> {
        let b: [u8; 4] = bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| wasmtime::format_err!("pointer pair out of bounds"))?;
        Ok(u32::from_le_bytes(b) as usize)
    };
    Ok((word(0)?, word(4)?))
}

/// A pointer and length as the canonical ABI passes them flat.
fn flat_pair(src: &[ValRaw; 2]) -> (usize, usize) {
    (src[0].get_u32() as usize, src[1].get_u32() as usize)
}

#[allow(unsafe_code, reason = "ComponentType is an unsafe trait; List mirrors WasmList's ABI")]
// SAFETY: the same lowered form, ABI and type check as `WasmList<T>`
// (a pointer and a length), which is what the lift below reads.
unsafe impl<T: ComponentType, B: Bound> ComponentType for List<T, B> {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = <wasmtime::component::WasmList<T> as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <wasmtime::component::WasmList<T> as ComponentType>::typecheck(ty, types)
    }
}

#[allow(unsafe_code, reason = "Lift is an unsafe trait")]
// SAFETY: reads only through the bounds-checked slices of `lift_list`.
unsafe impl<T: Lift, B: Bound> Lift for List<T, B> {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let (ptr, len) = flat_pair(src);
        lift_list(cx, ty, ptr, len)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let (ptr, len) = pointer_pair(bytes)?;
        lift_list(cx, ty, ptr, len)
    }
}

/// A `string` copied only if it fits `B::max()` bytes.
pub(crate) struct Text<B> {
    /// The string, or its length (code units as the guest encodes it) when
    /// it is longer than the bound and was not copied.
    pub(crate) value: Result<String, usize>,
    _bound: PhantomData<fn() -> B>,
}

impl<B: Bound> Text<B> {
    /// The string if it fits.
    pub(crate) fn fits(&self) -> Option<&str> {
        self.value.as_deref().ok()
    }
}

/// How a string's code units are stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Units {
    /// UTF-8 bytes.
    Utf8,
    /// Latin-1 bytes (`latin1+utf16` without the tag).
    Latin1,
    /// UTF-16 code units, two bytes each (`utf16`, or `latin1+utf16` with
    /// the tag, which `tagged` records).
    Utf16 { tagged: bool },
}

/// A string's length in code units and how they are stored, checked to lie
/// in memory and be aligned (canonical ABI), as wasmtime checks it.
fn string_units(cx: &LiftContext<'_>, ptr: usize, len: usize) -> wasmtime::Result<(usize, Units)> {
    let (units, kind) = match cx.options().string_encoding {
        StringEncoding::Utf8 => (len, Units::Utf8),
        StringEncoding::Utf16 => (len, Units::Utf16 { tagged: false }),
        StringEncoding::CompactUtf16 if len & UTF16_TAG == 0 => (len, Units::Latin1),
        StringEncoding::CompactUtf16 => (len ^ UTF16_TAG, Units::Utf16 { tagged: true }),
    };
    let unit = if matches!(kind, Units::Utf16 { .. }) { 2 } else { 1 };
    if !ptr.is_multiple_of(unit) {
        wasmtime::bail!("string pointer not aligned to {unit}");
    }
    match units.checked_mul(unit).and_then(|n| ptr.checked_add(n)) {
        Some(end) if end <= cx.memory().len() => Ok((units, kind)),
        _ => wasmtime::bail!("string pointer/length out of bounds of memory"),
    }
}

/// Copies the string at `ptr` of `len` (as the canonical ABI encodes it)
/// with wasmtime's own lift: decoding and validation as it does.
fn copy_string(
    cx: &mut LiftContext<'_>,
    ty: InterfaceType,
    ptr: usize,
    len: usize,
) -> wasmtime::Result<String> {
    // At most 4 GiB of memory (32-bit), so both fit a u32.
    let src = [ValRaw::u32(ptr as u32), ValRaw::u32(len as u32)];
    String::linear_lift_from_flat(cx, ty, &src)
}

fn lift_text<B: Bound>(
    cx: &mut LiftContext<'_>,
    ty: InterfaceType,
    ptr: usize,
    len: usize,
) -> wasmtime::Result<Text<B>> {
    let (units, _) = string_units(cx, ptr, len)?;
    // A code unit (UTF-8 byte, Latin-1 byte, UTF-16 unit) is never more
    // than one UTF-8 byte of the decoded text, so more units than the bound
    // means more bytes.
    let value = if units > B::max() {
        Err(units)
    } else {
        let s = copy_string(cx, ty, ptr, len)?;
        if s.len() > B::max() { Err(s.len()) } else { Ok(s) }
    };
    Ok(Text { value, _bound: PhantomData })
}

#[allow(unsafe_code, reason = "ComponentType is an unsafe trait; Text mirrors WasmStr's ABI")]
// SAFETY: the same lowered form, ABI and type check as `WasmStr`.
unsafe impl<B: Bound> ComponentType for Text<B> {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = <WasmStr as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <WasmStr as ComponentType>::typecheck(ty, types)
    }
}

#[allow(unsafe_code, reason = "Lift is an unsafe trait")]
// SAFETY: reads memory only through wasmtime's own string lift, after the
// bounds check of `string_units`.
unsafe impl<B: Bound> Lift for Text<B> {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let (ptr, len) = flat_pair(src);
        lift_text(cx, ty, ptr, len)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let (ptr, len) = pointer_pair(bytes)?;
        lift_text(cx, ty, ptr, len)
    }
}

/// A log line: its first [`MAX_LOG_LINE`] bytes (UTF-8; code units in
/// other encodings), cut at a character boundary. Only that prefix is read
/// and validated; invalid UTF-8 in it fails the call as the canonical ABI
/// requires.
pub(crate) struct Line(pub(crate) String);

fn lift_line(
    cx: &mut LiftContext<'_>,
    ty: InterfaceType,
    ptr: usize,
    len: usize,
) -> wasmtime::Result<Line> {
    let (units, kind) = string_units(cx, ptr, len)?;
    if units <= MAX_LOG_LINE {
        return copy_string(cx, ty, ptr, len).map(Line);
    }
    // In bounds: `string_units` checked all `units` of them.
    let memory = cx.memory();
    let cut = match kind {
        Units::Utf8 => match std::str::from_utf8(&memory[ptr..ptr + MAX_LOG_LINE]) {
            Ok(_) => MAX_LOG_LINE,
            // The prefix ends inside a character: cut before it.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(e) => return Err(wasmtime::Error::new(e)),
        },
        // Every Latin-1 byte is a character.
        Units::Latin1 => MAX_LOG_LINE,
        // Do not split a surrogate pair: drop a trailing high surrogate.
        Units::Utf16 { tagged } => {
            let at = ptr + 2 * (MAX_LOG_LINE - 1);
            let last = u16::from_le_bytes([memory[at], memory[at + 1]]);
            let cut =
                if (0xd800..0xdc00).contains(&last) { MAX_LOG_LINE - 1 } else { MAX_LOG_LINE };
            if tagged { cut | UTF16_TAG } else { cut }
        }
    };
    copy_string(cx, ty, ptr, cut).map(Line)
}

#[allow(unsafe_code, reason = "ComponentType is an unsafe trait; Line mirrors WasmStr's ABI")]
// SAFETY: the same lowered form, ABI and type check as `WasmStr`.
unsafe impl ComponentType for Line {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = <WasmStr as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <WasmStr as ComponentType>::typecheck(ty, types)
    }
}

#[allow(unsafe_code, reason = "Lift is an unsafe trait")]
// SAFETY: reads memory only after the bounds check of `string_units`, and
// within the prefix it checked.
unsafe impl Lift for Line {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let (ptr, len) = flat_pair(src);
        lift_line(cx, ty, ptr, len)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let (ptr, len) = pointer_pair(bytes)?;
        lift_line(cx, ty, ptr, len)
    }
}

// ---------------------------------------------------------------------------
// The WIT records a plugin returns, with bounded lists and strings. Field
// order and names mirror wit/collector.wit.
// ---------------------------------------------------------------------------

/// `field-decl`.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub(crate) struct RawFieldDecl {
    name: Text<FieldName>,
    #[component(name = "type")]
    type_: FieldType,
}

/// `event-decl`.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub(crate) struct RawEventDecl {
    kind: Text<EventKindName>,
    fields: List<RawFieldDecl, Fields>,
}

/// `metric-decl`.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub(crate) struct RawMetricDecl {
    name: Text<MetricName>,
    kind: MetricKind,
    unit: Text<ShortText>,
    description: Text<Description>,
    #[component(name = "label-keys")]
    label_keys: List<Text<ShortText>, LabelKeys>,
    buckets: List<f64, Buckets>,
}

/// `plugin-info`, what `info` returns.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub(crate) struct RawInfo {
    name: Text<ShortText>,
    version: Text<ShortText>,
    description: Text<Description>,
    events: List<RawEventDecl, EventDecls>,
    metrics: List<RawMetricDecl, Metrics>,
}

/// `histogram-delta`.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub(crate) struct RawHistogram {
    buckets: List<u64, BucketCounts>,
    count: u64,
    sum: f64,
}

/// `metric-value`.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(variant)]
pub(crate) enum RawValue {
    #[component(name = "counter")]
    Counter(f64),
    #[component(name = "gauge")]
    Gauge(f64),
    #[component(name = "histogram")]
    Histogram(RawHistogram),
}

/// `metric-point`, an element of what `collect` returns.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub(crate) struct RawPoint {
    metric: u32,
    labels: List<Text<LabelValue>, LabelKeys>,
    value: RawValue,
}

/// What `collect` returns: at most `max_points_per_collect` points.
pub(crate) type RawPoints = List<RawPoint, Points>;

/// The typed exports whose results are lifted by the bounded types above.
pub(crate) type InfoFunc = wasmtime::component::TypedFunc<(), (RawInfo,)>;
/// `collect`, lifting at most the plugin's bounds.
pub(crate) type CollectFunc = wasmtime::component::TypedFunc<(), (RawPoints,)>;

/// The points of one `collect` that were lifted whole, and how many were
/// not.
#[derive(Default)]
pub(crate) struct Collected {
    /// Points within every bound, to be checked against their declaration.
    pub(crate) points: Vec<MetricPoint>,
    /// Points past `max_points_per_collect`, never lifted.
    pub(crate) excess: u64,
    /// Points with a list or string over its bound (more labels than any
    /// metric has keys, a label longer than `max_label_len`, more bucket
    /// counts than any histogram has): never copied whole, invalid.
    pub(crate) invalid: u64,
}

/// Sorts what `collect` returned into whole points and counts.
pub(crate) fn collected(raw: RawPoints) -> Collected {
    let excess = raw.len.saturating_sub(raw.items.len()) as u64;
    let mut out = Collected { excess, ..Collected::default() };
    for p in raw.items {
        match point(p) {
            Some(p) => out.points.push(p),
            None => out.invalid += 1,
        }
    }
    out
}

fn point(p: RawPoint) -> Option<MetricPoint> {
    if p.labels.over() {
        return None;
    }
    let labels = p.labels.items.into_iter().map(|t| t.value.ok()).collect::<Option<Vec<_>>>()?;
    let value = match p.value {
        RawValue::Counter(v) => MetricValue::Counter(v),
        RawValue::Gauge(v) => MetricValue::Gauge(v),
        RawValue::Histogram(h) if h.buckets.over() => return None,
        RawValue::Histogram(h) => MetricValue::Histogram(HistogramDelta {
            buckets: h.buckets.items,
            count: h.count,
            sum: h.sum,
        }),
    };
    Some(MetricPoint { metric: p.metric, labels, value })
}

/// The string, or why it is refused (`what` names it).
fn text<B: Bound>(what: &str, t: Text<B>) -> Result<String, String> {
    t.value.map_err(|len| format!("{what} is {len} bytes, at most {} are allowed", B::max()))
}

/// What `info` returned, if every list and string is within its bound; the
/// error says which is not, in the words of [`info::validate`], which the
/// caller runs next for everything else.
pub(crate) fn plugin_info(raw: RawInfo) -> Result<PluginInfo, String> {
    let name = text("plugin name", raw.name)?;
    let version = text("version", raw.version)?;
    let description = text("description", raw.description)?;
    if raw.events.over() {
        return Err(format!(
            "declares {} event kinds, at most {}",
            raw.events.len,
            info::MAX_EVENT_DECLS
        ));
    }
    let mut events = Vec::with_capacity(raw.events.items.len());
    for e in raw.events.items {
        let kind = text("event kind", e.kind)?;
        if e.fields.over() {
            return Err(format!(
                "event kind `{}` reads {} fields, at most {}",
                info::clip(&kind),
                e.fields.len,
                crate::event::MAX_FIELDS
            ));
        }
        let fields = e
            .fields
            .items
            .into_iter()
            .map(|f| {
                Ok(crate::bindings::sonde::collector::types::FieldDecl {
                    name: text("field", f.name)?,
                    type_: f.type_,
                })
            })
            .collect::<Result<_, String>>()?;
        events.push(crate::bindings::sonde::collector::types::EventDecl { kind, fields });
    }
    if raw.metrics.over() {
        return Err(format!("declares {} metrics, at most {}", raw.metrics.len, info::MAX_METRICS));
    }
    let mut metrics = Vec::with_capacity(raw.metrics.items.len());
    for m in raw.metrics.items {
        let name = text("metric name", m.name)?;
        if m.label_keys.over() {
            return Err(format!(
                "metric `{}` has more than {} label keys",
                info::clip(&name),
                info::MAX_LABEL_KEYS
            ));
        }
        if m.buckets.over() {
            return Err(match m.kind {
                MetricKind::Histogram => format!(
                    "histogram `{}` needs 1 to {} bucket bounds",
                    info::clip(&name),
                    info::MAX_BUCKETS
                ),
                _ => format!(
                    "metric `{}` is not a histogram but declares buckets",
                    info::clip(&name)
                ),
            });
        }
        let label_keys = m
            .label_keys
            .items
            .into_iter()
            .map(|k| text("label key", k))
            .collect::<Result<_, String>>()?;
        metrics.push(MetricDecl {
            name,
            kind: m.kind,
            unit: text("unit", m.unit)?,
            description: text("metric description", m.description)?,
            label_keys,
            buckets: m.buckets.items,
        });
    }
    Ok(PluginInfo { name, version, description, events, metrics })
}
