/* sonde.h: write sonde metric collectors in C.
 *
 * A sonde collector is a WebAssembly component implementing the
 * `sonde:collector@0.2.0` WIT contract (`wit/collector.wit`). This header
 * sits on the bindings `wit-bindgen c` generates (`metric_collector.h`) and
 * mirrors the Rust SDK (`crates/sonde-sdk`) name for name:
 *
 * - `sonde_batch`: a typed view over a columnar batch (`sonde_batch_int`,
 *   `sonde_batch_float`, `sonde_batch_str`, `sonde_batch_weight`);
 * - delta accumulators implementing `collect`'s semantics:
 *   `sonde_counters`, `sonde_histograms`, `sonde_gauges`;
 * - the host imports `sonde_log` and `sonde_config`;
 * - `sonde_info_*`, which build the plugin's `info`.
 *
 * A plugin defines three functions, which `sonde.c` calls from the
 * component's exports:
 *
 *     void sonde_info(sonde_info_builder *info);      // once per instance, first
 *     void sonde_on_events(const sonde_batch *batch); // each batch of events
 *     void sonde_collect(sonde_points *out);          // what changed since the last call
 *
 * A complete collector (`plugin.c`):
 *
 *     #include "sonde.h"
 *
 *     static sonde_counters counters;   // zero-initialized: ready to use
 *
 *     void sonde_info(sonde_info_builder *info) {
 *         sonde_info_set(info, "methods", "0.1.0", "Requests per HTTP method.");
 *         sonde_info_event(info, "http.request", 1, (sonde_field[]){{"method", SONDE_STR}});
 *         sonde_info_counter(info, "http.methods", "1", "Requests per method.", 1,
 *                            (const char *[]){"method"});
 *     }
 *
 *     void sonde_on_events(const sonde_batch *batch) {
 *         char method[16];
 *         for (size_t i = 0; i < sonde_batch_len(batch); i++) {
 *             sonde_str m;
 *             bool ok = sonde_batch_str(batch, 0, i, &m) && m.len < sizeof method;
 *             if (ok) { memcpy(method, m.ptr, m.len); method[m.len] = 0; }
 *             sonde_counters_add(&counters, 0, 1, (const char *[]){ok ? method : "other"},
 *                                (double)sonde_batch_weight(batch, i));
 *         }
 *     }
 *
 *     void sonde_collect(sonde_points *out) { sonde_counters_drain(&counters, out); }
 *
 * Build: `wit-bindgen c wit --world metric-collector`, then clang
 * `--target=wasm32-unknown-unknown -ffreestanding -nostdlib` over the plugin,
 * `sonde.c`, `sonde_alloc.c` and the generated C and object files, with
 * `-isystem sdk/c/libc`; then turn the core module into a component (the
 * sonde repository's `cargo xtask plugins` does all of it; see docs/c.md).
 * There is no libc (a libc would import WASI, which the host refuses):
 * `sonde_alloc.c` provides malloc, free, realloc, calloc, abort, memcpy,
 * memmove, memset, memcmp and strlen, and nothing else is available.
 *
 * Memory: strings and lists the SDK returns point into the batch and live
 * until `sonde_on_events` returns; everything the accumulators keep is
 * copied. A failed allocation traps (the host restarts the plugin and counts
 * it as a memory failure). */
#ifndef SONDE_H
#define SONDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "metric_collector.h"

/* ------------------------------------------------------------------ types */

/** A string that is not NUL-terminated: `len` bytes at `ptr` (UTF-8). */
typedef struct {
    const char *ptr;
    size_t len;
} sonde_str;

/** The type a collector reads a field as (`field-type`). */
typedef enum {
    SONDE_INT = SONDE_COLLECTOR_TYPES_FIELD_TYPE_INT,
    SONDE_FLOAT = SONDE_COLLECTOR_TYPES_FIELD_TYPE_FLOAT,
    SONDE_STR = SONDE_COLLECTOR_TYPES_FIELD_TYPE_STR,
} sonde_field_type;

/** One field of an event kind a collector reads. */
typedef struct {
    const char *name;
    sonde_field_type type;
} sonde_field;

/** Severity of a log line. */
typedef enum {
    SONDE_ERROR = SONDE_COLLECTOR_HOST_LEVEL_ERROR,
    SONDE_WARN = SONDE_COLLECTOR_HOST_LEVEL_WARN,
    SONDE_INFO = SONDE_COLLECTOR_HOST_LEVEL_INFO,
    SONDE_DEBUG = SONDE_COLLECTOR_HOST_LEVEL_DEBUG,
} sonde_level;

/** A string column's code for "this row has no such string". */
#define SONDE_MISSING UINT32_MAX

/** A batch received by `sonde_on_events` (the WIT `event-batch`). */
typedef sonde_collector_types_event_batch_t sonde_batch;

/** The `plugin-info` being built by `sonde_info`. */
typedef sonde_collector_types_plugin_info_t sonde_info_builder;

/** The points `sonde_collect` appends to. */
typedef exports_sonde_collector_collector_list_metric_point_t sonde_points;

/* ------------------------------------------------- the plugin defines these */

/** Describes the plugin. Called once per instance, first; the host freezes
 * the answer, so it must not vary. */
void sonde_info(sonde_info_builder *info);
/** Consumes a batch of events of one declared kind (`sonde_batch_kind`). */
void sonde_on_events(const sonde_batch *batch);
/** Appends what changed since the previous call: usually drains the
 * plugin's accumulators. */
void sonde_collect(sonde_points *out);

/* ------------------------------------------------------------------- info */

/** Sets the plugin's name, version and description. */
void sonde_info_set(sonde_info_builder *info, const char *name, const char *version,
                    const char *description);
/** Declares an event kind and the `n` fields read from it, in the order in
 * which a batch carries their columns. */
void sonde_info_event(sonde_info_builder *info, const char *kind, size_t n,
                      const sonde_field *fields);
/** Declares a counter (index: the number of metrics declared before it):
 * `collect` returns increments. */
void sonde_info_counter(sonde_info_builder *info, const char *name, const char *unit,
                        const char *description, size_t nlabels, const char *const *label_keys);
/** Declares a gauge: `collect` returns the current value. */
void sonde_info_gauge(sonde_info_builder *info, const char *name, const char *unit,
                      const char *description, size_t nlabels, const char *const *label_keys);
/** Declares a histogram over `nbuckets` ascending, finite upper `buckets`
 * (inclusive); an implicit last bucket holds everything above the last. */
void sonde_info_histogram(sonde_info_builder *info, const char *name, const char *unit,
                          const char *description, size_t nlabels,
                          const char *const *label_keys, size_t nbuckets, const double *buckets);

/* ------------------------------------------------------------------ batch
 *
 * A batch holds `sonde_batch_len` rows; row `i` stands for
 * `sonde_batch_weight(batch, i)` events that were identical over the fields
 * this plugin declared (the host merges them). Count events with the
 * weights, never with the rows. Column `col` is field `col` of the event
 * kind's declared fields. Asking for a column with the wrong accessor, past
 * the end, or a row that lacks the field returns false. */

/** Number of rows. */
size_t sonde_batch_len(const sonde_batch *batch);
/** Index of the batch's event kind in the declared events. */
uint32_t sonde_batch_kind(const sonde_batch *batch);
/** Events row `i` stands for: at least 1, or 0 past the end. */
uint64_t sonde_batch_weight(const sonde_batch *batch, size_t i);
/** Events in the batch: the sum of the weights. */
uint64_t sonde_batch_events(const sonde_batch *batch);
/** Row `i` of int column `col` into `*out`; false if missing. */
bool sonde_batch_int(const sonde_batch *batch, size_t col, size_t i, int64_t *out);
/** Row `i` of float column `col` into `*out`; false if missing. */
bool sonde_batch_float(const sonde_batch *batch, size_t col, size_t i, double *out);
/** Row `i` of str column `col` into `*out`; false if missing. */
bool sonde_batch_str(const sonde_batch *batch, size_t col, size_t i, sonde_str *out);
/** The dictionary code of row `i` of str column `col`, or `SONDE_MISSING`:
 * with `sonde_batch_dict`, the cheap way to classify each distinct value
 * once (the Rust SDK's `map_distinct`). */
uint32_t sonde_batch_code(const sonde_batch *batch, size_t col, size_t i);
/** Number of distinct values in str column `col`'s dictionary. */
size_t sonde_batch_dict_len(const sonde_batch *batch, size_t col);
/** Dictionary entry `code` of str column `col` into `*out`; false if the
 * code or its bounds are out of range. */
bool sonde_batch_dict(const sonde_batch *batch, size_t col, uint32_t code, sonde_str *out);

/* ----------------------------------------------------------- accumulators
 *
 * Each gathers updates keyed by series (metric index plus label values,
 * NUL-terminated strings, copied) and drains them into `sonde_points`,
 * forgetting them: the host keeps the cumulative series. Zero-initialized
 * (a `static` variable) is ready to use. Drained points come out by metric
 * index, then by label values. */

/** Series storage shared by the accumulators (its fields are private). */
typedef struct {
    struct sonde_series *slots;
    size_t cap;
    size_t len;
} sonde_series_map;

/** Counter increments per series since the last drain. */
typedef struct {
    sonde_series_map series;
} sonde_counters;

/** Current gauge values per series, set since the last drain. */
typedef struct {
    sonde_series_map series;
} sonde_gauges;

/** Histogram increments per series since the last drain. */
typedef struct {
    sonde_series_map series;
    struct sonde_bounds *bounds;
    size_t nbounds;
} sonde_histograms;

/** Adds `delta` to counter `metric` with `labels` (values in the metric's
 * label-key order). A negative, NaN or infinite delta is ignored; 0 creates
 * the series. */
void sonde_counters_add(sonde_counters *c, uint32_t metric, size_t nlabels,
                        const char *const *labels, double delta);
/** Appends one counter point per series added to since the last drain. */
void sonde_counters_drain(sonde_counters *c, sonde_points *out);

/** Sets gauge `metric` with `labels` to `value` (non-finite: ignored). */
void sonde_gauges_set(sonde_gauges *g, uint32_t metric, size_t nlabels,
                      const char *const *labels, double value);
/** Appends one gauge point per series set since the last drain. */
void sonde_gauges_drain(sonde_gauges *g, sonde_points *out);

/** Declares histogram `metric` with `n` ascending upper `bounds`. */
void sonde_histograms_declare(sonde_histograms *h, uint32_t metric, size_t n,
                              const double *bounds);
/** The bucket `metric` puts `value` in (the first bound `b` with
 * `value <= b`, or `n` for the overflow bucket); -1 if undeclared or not
 * finite. */
long sonde_histograms_bucket_of(const sonde_histograms *h, uint32_t metric, double value);
/** Records `n` observations of `value` (ignored if undeclared, not finite
 * or `n` is 0). */
void sonde_histograms_observe_n(sonde_histograms *h, uint32_t metric, size_t nlabels,
                                const char *const *labels, double value, uint64_t n);
/** Appends one histogram point per series observed since the last drain. */
void sonde_histograms_drain(sonde_histograms *h, sonde_points *out);

/* ------------------------------------------------------------------- host */

/** Logs `message` (NUL-terminated) under the plugin's name; rate-limited by
 * the host, long lines cut. */
void sonde_log(sonde_level level, const char *message);
/** The value of `key` in the plugin's `[plugin.config]` table, as a
 * NUL-terminated string the caller frees with `free`, or NULL if unset. */
char *sonde_config(const char *key);

#endif
