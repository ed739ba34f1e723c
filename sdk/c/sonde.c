/* The sonde C SDK (see sonde.h): the component's exports, the batch view,
 * the info builders, the delta accumulators and the host imports. */

#include "sonde.h"

#include <stdlib.h>
#include <string.h>

/* A failed allocation traps: the host counts a memory failure and restarts
 * the plugin. */
static void *alloc(size_t size) {
    void *p = malloc(size ? size : 1);
    if (p == NULL) abort();
    return p;
}

static void *grow(void *ptr, size_t count, size_t size) {
    if (size != 0 && count > SIZE_MAX / size) abort();
    void *p = realloc(ptr, count * size ? count * size : 1);
    if (p == NULL) abort();
    return p;
}

static void string_of(metric_collector_string_t *out, const char *s) {
    size_t len = strlen(s);
    out->ptr = alloc(len);
    memcpy(out->ptr, s, len);
    out->len = len;
}

/* ---------------------------------------------------------------- exports */

void exports_sonde_collector_collector_info(exports_sonde_collector_collector_plugin_info_t *ret) {
    memset(ret, 0, sizeof *ret);
    sonde_info(ret);
}

void exports_sonde_collector_collector_on_events(
    exports_sonde_collector_collector_event_batch_t *batch) {
    sonde_on_events(batch);
    exports_sonde_collector_collector_event_batch_free(batch);
}

void exports_sonde_collector_collector_collect(
    exports_sonde_collector_collector_list_metric_point_t *ret) {
    ret->ptr = NULL;
    ret->len = 0;
    sonde_collect(ret);
}

/* ------------------------------------------------------------------- info */

void sonde_info_set(sonde_info_builder *info, const char *name, const char *version,
                    const char *description) {
    metric_collector_string_free(&info->name);
    metric_collector_string_free(&info->version);
    metric_collector_string_free(&info->description);
    string_of(&info->name, name);
    string_of(&info->version, version);
    string_of(&info->description, description);
}

void sonde_info_event(sonde_info_builder *info, const char *kind, size_t n,
                      const sonde_field *fields) {
    sonde_collector_types_list_event_decl_t *events = &info->events;
    events->ptr = grow(events->ptr, events->len + 1, sizeof *events->ptr);
    sonde_collector_types_event_decl_t *e = &events->ptr[events->len++];
    string_of(&e->kind, kind);
    e->fields.ptr = alloc(n * sizeof *e->fields.ptr);
    e->fields.len = n;
    for (size_t i = 0; i < n; i++) {
        string_of(&e->fields.ptr[i].name, fields[i].name);
        e->fields.ptr[i].type = (sonde_collector_types_field_type_t)fields[i].type;
    }
}

static void metric(sonde_info_builder *info, sonde_collector_types_metric_kind_t kind,
                   const char *name, const char *unit, const char *description, size_t nlabels,
                   const char *const *label_keys, size_t nbuckets, const double *buckets) {
    sonde_collector_types_list_metric_decl_t *metrics = &info->metrics;
    metrics->ptr = grow(metrics->ptr, metrics->len + 1, sizeof *metrics->ptr);
    sonde_collector_types_metric_decl_t *m = &metrics->ptr[metrics->len++];
    string_of(&m->name, name);
    m->kind = kind;
    string_of(&m->unit, unit);
    string_of(&m->description, description);
    m->label_keys.ptr = alloc(nlabels * sizeof *m->label_keys.ptr);
    m->label_keys.len = nlabels;
    for (size_t i = 0; i < nlabels; i++) string_of(&m->label_keys.ptr[i], label_keys[i]);
    m->buckets.ptr = alloc(nbuckets * sizeof *m->buckets.ptr);
    m->buckets.len = nbuckets;
    for (size_t i = 0; i < nbuckets; i++) m->buckets.ptr[i] = buckets[i];
}

void sonde_info_counter(sonde_info_builder *info, const char *name, const char *unit,
                        const char *description, size_t nlabels, const char *const *label_keys) {
    metric(info, SONDE_COLLECTOR_TYPES_METRIC_KIND_COUNTER, name, unit, description, nlabels,
           label_keys, 0, NULL);
}

void sonde_info_gauge(sonde_info_builder *info, const char *name, const char *unit,
                      const char *description, size_t nlabels, const char *const *label_keys) {
    metric(info, SONDE_COLLECTOR_TYPES_METRIC_KIND_GAUGE, name, unit, description, nlabels,
           label_keys, 0, NULL);
}

void sonde_info_histogram(sonde_info_builder *info, const char *name, const char *unit,
                          const char *description, size_t nlabels,
                          const char *const *label_keys, size_t nbuckets, const double *buckets) {
    metric(info, SONDE_COLLECTOR_TYPES_METRIC_KIND_HISTOGRAM, name, unit, description, nlabels,
           label_keys, nbuckets, buckets);
}

/* ------------------------------------------------------------------ batch */

size_t sonde_batch_len(const sonde_batch *batch) { return batch->len; }

uint32_t sonde_batch_kind(const sonde_batch *batch) { return batch->kind; }

uint64_t sonde_batch_weight(const sonde_batch *batch, size_t i) {
    if (i >= batch->len) return 0;
    if (i >= batch->weights.len) return 1;
    uint32_t w = batch->weights.ptr[i];
    return w ? w : 1;
}

uint64_t sonde_batch_events(const sonde_batch *batch) {
    if (batch->weights.len == 0) return batch->len;
    uint64_t sum = 0;
    for (size_t i = 0; i < batch->len; i++) sum += sonde_batch_weight(batch, i);
    return sum;
}

static const sonde_collector_types_column_t *column(const sonde_batch *batch, size_t col,
                                                    uint8_t tag) {
    if (col >= batch->columns.len) return NULL;
    const sonde_collector_types_column_t *c = &batch->columns.ptr[col];
    return c->data.tag == tag ? c : NULL;
}

static bool is_missing(const sonde_collector_types_column_t *c, size_t i) {
    for (size_t k = 0; k < c->missing.len; k++) {
        if (c->missing.ptr[k] == i) return true;
    }
    return false;
}

bool sonde_batch_int(const sonde_batch *batch, size_t col, size_t i, int64_t *out) {
    const sonde_collector_types_column_t *c = column(batch, col, SONDE_COLLECTOR_TYPES_COLUMN_DATA_INT);
    if (c == NULL || i >= batch->len || i >= c->data.val.int_.len || is_missing(c, i)) return false;
    *out = c->data.val.int_.ptr[i];
    return true;
}

bool sonde_batch_float(const sonde_batch *batch, size_t col, size_t i, double *out) {
    const sonde_collector_types_column_t *c =
        column(batch, col, SONDE_COLLECTOR_TYPES_COLUMN_DATA_FLOAT);
    if (c == NULL || i >= batch->len || i >= c->data.val.float_.len || is_missing(c, i)) return false;
    *out = c->data.val.float_.ptr[i];
    return true;
}

uint32_t sonde_batch_code(const sonde_batch *batch, size_t col, size_t i) {
    const sonde_collector_types_column_t *c = column(batch, col, SONDE_COLLECTOR_TYPES_COLUMN_DATA_STR);
    if (c == NULL || i >= batch->len) return SONDE_MISSING;
    const sonde_collector_types_str_column_t *s = &c->data.val.str;
    if (i >= s->codes.len || s->codes.ptr[i] >= s->dict_ends.len) return SONDE_MISSING;
    return s->codes.ptr[i];
}

size_t sonde_batch_dict_len(const sonde_batch *batch, size_t col) {
    const sonde_collector_types_column_t *c = column(batch, col, SONDE_COLLECTOR_TYPES_COLUMN_DATA_STR);
    return c == NULL ? 0 : c->data.val.str.dict_ends.len;
}

bool sonde_batch_dict(const sonde_batch *batch, size_t col, uint32_t code, sonde_str *out) {
    const sonde_collector_types_column_t *c = column(batch, col, SONDE_COLLECTOR_TYPES_COLUMN_DATA_STR);
    if (c == NULL) return false;
    const sonde_collector_types_str_column_t *s = &c->data.val.str;
    if (code >= s->dict_ends.len) return false;
    uint32_t start = code == 0 ? 0 : s->dict_ends.ptr[code - 1];
    uint32_t end = s->dict_ends.ptr[code];
    if (start > end || end > s->dict_bytes.len) return false;
    out->ptr = (const char *)s->dict_bytes.ptr + start;
    out->len = end - start;
    return true;
}

bool sonde_batch_str(const sonde_batch *batch, size_t col, size_t i, sonde_str *out) {
    uint32_t code = sonde_batch_code(batch, col, i);
    return code != SONDE_MISSING && sonde_batch_dict(batch, col, code, out);
}

/* ------------------------------------------------------------ series maps */

/* One series: its key (metric, labels) and what each accumulator keeps. */
struct sonde_series {
    bool used;
    uint32_t metric;
    uint64_t hash;
    metric_collector_list_string_t labels;
    double value;
    metric_collector_list_u64_t buckets;
    uint64_t count;
};

struct sonde_bounds {
    uint32_t metric;
    size_t n;
    double *bounds;
};

static uint64_t hash_of(uint32_t metric, size_t nlabels, const char *const *labels) {
    uint64_t h = 1469598103934665603ull ^ metric;
    for (size_t i = 0; i < nlabels; i++) {
        for (const char *p = labels[i]; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull; /* a label's end: not a byte of UTF-8 */
    }
    return h;
}

static bool same_key(const struct sonde_series *s, uint32_t metric, size_t nlabels,
                     const char *const *labels) {
    if (s->metric != metric || s->labels.len != nlabels) return false;
    for (size_t i = 0; i < nlabels; i++) {
        size_t len = strlen(labels[i]);
        if (s->labels.ptr[i].len != len || memcmp(s->labels.ptr[i].ptr, labels[i], len) != 0)
            return false;
    }
    return true;
}

/* The series for (metric, labels), created (zeroed) if new. */
static struct sonde_series *series_of(sonde_series_map *m, uint32_t metric, size_t nlabels,
                                      const char *const *labels) {
    if ((m->len + 1) * 4 > m->cap * 3) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        struct sonde_series *old = m->slots;
        size_t old_cap = m->cap;
        m->slots = alloc(cap * sizeof *m->slots);
        memset(m->slots, 0, cap * sizeof *m->slots);
        m->cap = cap;
        for (size_t i = 0; i < old_cap; i++) {
            if (!old[i].used) continue;
            size_t at = old[i].hash & (cap - 1);
            while (m->slots[at].used) at = (at + 1) & (cap - 1);
            m->slots[at] = old[i];
        }
        free(old);
    }
    uint64_t h = hash_of(metric, nlabels, labels);
    size_t at = h & (m->cap - 1);
    while (m->slots[at].used) {
        if (m->slots[at].hash == h && same_key(&m->slots[at], metric, nlabels, labels))
            return &m->slots[at];
        at = (at + 1) & (m->cap - 1);
    }
    struct sonde_series *s = &m->slots[at];
    memset(s, 0, sizeof *s);
    s->used = true;
    s->metric = metric;
    s->hash = h;
    s->labels.ptr = alloc(nlabels * sizeof *s->labels.ptr);
    s->labels.len = nlabels;
    for (size_t i = 0; i < nlabels; i++) string_of(&s->labels.ptr[i], labels[i]);
    m->len++;
    return s;
}

static int compare_strings(const metric_collector_string_t *a, const metric_collector_string_t *b) {
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->ptr, b->ptr, n);
    if (c != 0) return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static bool before(const struct sonde_series *a, const struct sonde_series *b) {
    if (a->metric != b->metric) return a->metric < b->metric;
    size_t n = a->labels.len < b->labels.len ? a->labels.len : b->labels.len;
    for (size_t i = 0; i < n; i++) {
        int c = compare_strings(&a->labels.ptr[i], &b->labels.ptr[i]);
        if (c != 0) return c < 0;
    }
    return a->labels.len < b->labels.len;
}

/* Moves every series into `out` (ownership of labels and buckets passes to
 * the points, which the generated post-return code frees), sorted by metric
 * then labels, and empties the map. */
static void drain(sonde_series_map *m, sonde_points *out, uint8_t tag) {
    if (m->len == 0) return;
    size_t first = out->len;
    out->ptr = grow(out->ptr, out->len + m->len, sizeof *out->ptr);
    for (size_t i = 0; i < m->cap; i++) {
        struct sonde_series *s = &m->slots[i];
        if (!s->used) continue;
        sonde_collector_types_metric_point_t *p = &out->ptr[out->len++];
        p->metric = s->metric;
        p->labels = s->labels;
        p->value.tag = tag;
        if (tag == SONDE_COLLECTOR_TYPES_METRIC_VALUE_HISTOGRAM) {
            p->value.val.histogram.buckets = s->buckets;
            p->value.val.histogram.count = s->count;
            p->value.val.histogram.sum = s->value;
        } else {
            p->value.val.counter = s->value;
        }
        s->used = false;
    }
    m->len = 0;
    /* Insertion sort of the new points: a window holds few series. */
    for (size_t i = first + 1; i < out->len; i++) {
        sonde_collector_types_metric_point_t p = out->ptr[i];
        struct sonde_series key = {.metric = p.metric, .labels = p.labels};
        size_t j = i;
        while (j > first) {
            struct sonde_series prev = {.metric = out->ptr[j - 1].metric,
                                        .labels = out->ptr[j - 1].labels};
            if (!before(&key, &prev)) break;
            out->ptr[j] = out->ptr[j - 1];
            j--;
        }
        out->ptr[j] = p;
    }
}

static bool finite(double x) { return x == x && x - x == 0.0; }

void sonde_counters_add(sonde_counters *c, uint32_t metric, size_t nlabels,
                        const char *const *labels, double delta) {
    if (!finite(delta) || delta < 0.0) return;
    series_of(&c->series, metric, nlabels, labels)->value += delta;
}

void sonde_counters_drain(sonde_counters *c, sonde_points *out) {
    drain(&c->series, out, SONDE_COLLECTOR_TYPES_METRIC_VALUE_COUNTER);
}

void sonde_gauges_set(sonde_gauges *g, uint32_t metric, size_t nlabels,
                      const char *const *labels, double value) {
    if (!finite(value)) return;
    series_of(&g->series, metric, nlabels, labels)->value = value;
}

void sonde_gauges_drain(sonde_gauges *g, sonde_points *out) {
    drain(&g->series, out, SONDE_COLLECTOR_TYPES_METRIC_VALUE_GAUGE);
}

static const struct sonde_bounds *bounds_of(const sonde_histograms *h, uint32_t metric) {
    for (size_t i = 0; i < h->nbounds; i++) {
        if (h->bounds[i].metric == metric) return &h->bounds[i];
    }
    return NULL;
}

void sonde_histograms_declare(sonde_histograms *h, uint32_t metric, size_t n,
                              const double *bounds) {
    struct sonde_bounds *b = (struct sonde_bounds *)bounds_of(h, metric);
    if (b == NULL) {
        h->bounds = grow(h->bounds, h->nbounds + 1, sizeof *h->bounds);
        b = &h->bounds[h->nbounds++];
        b->metric = metric;
    } else {
        free(b->bounds);
    }
    b->n = n;
    b->bounds = alloc(n * sizeof *b->bounds);
    for (size_t i = 0; i < n; i++) b->bounds[i] = bounds[i];
}

long sonde_histograms_bucket_of(const sonde_histograms *h, uint32_t metric, double value) {
    const struct sonde_bounds *b = bounds_of(h, metric);
    if (b == NULL || !finite(value)) return -1;
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b->bounds[mid] < value) lo = mid + 1;
        else hi = mid;
    }
    return (long)lo;
}

void sonde_histograms_observe_n(sonde_histograms *h, uint32_t metric, size_t nlabels,
                                const char *const *labels, double value, uint64_t n) {
    long bucket = sonde_histograms_bucket_of(h, metric, value);
    if (bucket < 0 || n == 0) return;
    struct sonde_series *s = series_of(&h->series, metric, nlabels, labels);
    if (s->buckets.len == 0) {
        size_t size = bounds_of(h, metric)->n + 1;
        s->buckets.ptr = alloc(size * sizeof *s->buckets.ptr);
        memset(s->buckets.ptr, 0, size * sizeof *s->buckets.ptr);
        s->buckets.len = size;
    }
    s->buckets.ptr[bucket] += n;
    s->count += n;
    s->value += value * (double)n;
}

void sonde_histograms_drain(sonde_histograms *h, sonde_points *out) {
    drain(&h->series, out, SONDE_COLLECTOR_TYPES_METRIC_VALUE_HISTOGRAM);
}

/* ------------------------------------------------------------------- host */

void sonde_log(sonde_level level, const char *message) {
    metric_collector_string_t s = {(uint8_t *)message, strlen(message)};
    sonde_collector_host_log((sonde_collector_host_level_t)level, &s);
}

char *sonde_config(const char *key) {
    metric_collector_string_t k = {(uint8_t *)key, strlen(key)};
    metric_collector_string_t v;
    if (!sonde_collector_host_config(&k, &v)) return NULL;
    char *out = alloc(v.len + 1);
    memcpy(out, v.ptr, v.len);
    out[v.len] = 0;
    metric_collector_string_free(&v);
    return out;
}
