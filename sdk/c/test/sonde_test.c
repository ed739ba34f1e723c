/* Unit tests of the C SDK, run natively by `cargo xtask test` (clang, the
 * host's libc): sonde.c against the generated header, with the few generated
 * functions it calls stood in for here. */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sonde.h"

static int failures;
#define CHECK(cond)                                                     \
    do {                                                                \
        if (!(cond)) {                                                  \
            fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                 \
        }                                                               \
    } while (0)

/* Stand-ins for the generated code and the host. */
void exports_sonde_collector_collector_event_batch_free(exports_sonde_collector_collector_event_batch_t *b) { (void)b; }
void metric_collector_string_free(metric_collector_string_t *s) { if (s->len) free(s->ptr); s->ptr = NULL; s->len = 0; }
static char logged[64];
void sonde_collector_host_log(sonde_collector_host_level_t level, metric_collector_string_t *m) {
    snprintf(logged, sizeof logged, "%d %.*s", level, (int)m->len, (const char *)m->ptr);
}
bool sonde_collector_host_config(metric_collector_string_t *key, metric_collector_string_t *ret) {
    if (key->len != 4 || memcmp(key->ptr, "mode", 4) != 0) return false;
    ret->ptr = malloc(4);
    memcpy(ret->ptr, "loop", 4);
    ret->len = 4;
    return true;
}
/* The plugin's three functions, unused here. */
void sonde_info(sonde_info_builder *info) { (void)info; }
void sonde_on_events(const sonde_batch *batch) { (void)batch; }
void sonde_collect(sonde_points *out) { (void)out; }

static bool str_is(const metric_collector_string_t *s, const char *want) {
    return s->len == strlen(want) && memcmp(s->ptr, want, s->len) == 0;
}

static void batch_accessors(void) {
    uint8_t bytes[] = "GETPOST\xff";
    uint32_t ends[] = {3, 7, 8, 99};
    uint32_t codes[] = {0, 1, SONDE_MISSING, 0, 2};
    int64_t ints[] = {200, 0, 503, 404}; /* short: row 4 has none */
    uint32_t int_missing[] = {1};
    uint32_t weights[] = {3, 1, 0};
    sonde_collector_types_column_t cols[2] = {0};
    cols[0].data.tag = SONDE_COLLECTOR_TYPES_COLUMN_DATA_STR;
    cols[0].data.val.str = (sonde_collector_types_str_column_t){{bytes, 8}, {ends, 4}, {codes, 5}};
    cols[1].data.tag = SONDE_COLLECTOR_TYPES_COLUMN_DATA_INT;
    cols[1].data.val.int_ = (metric_collector_list_s64_t){ints, 4};
    cols[1].missing = (metric_collector_list_u32_t){int_missing, 1};
    sonde_batch b = {0, 5, {cols, 2}, {weights, 3}};
    sonde_str s;
    int64_t v;
    CHECK(sonde_batch_len(&b) == 5 && sonde_batch_kind(&b) == 0);
    CHECK(sonde_batch_str(&b, 0, 1, &s) && s.len == 4 && memcmp(s.ptr, "POST", 4) == 0);
    CHECK(!sonde_batch_str(&b, 0, 2, &s));            /* missing */
    CHECK(sonde_batch_str(&b, 0, 4, &s) && s.len == 1); /* code 2: one byte, not checked as UTF-8 */
    CHECK(!sonde_batch_dict(&b, 0, 3, &s));           /* end past the bytes */
    CHECK(sonde_batch_dict_len(&b, 0) == 4 && sonde_batch_code(&b, 0, 3) == 0);
    CHECK(sonde_batch_int(&b, 1, 2, &v) && v == 503);
    CHECK(!sonde_batch_int(&b, 1, 1, &v) && !sonde_batch_int(&b, 1, 4, &v));
    CHECK(!sonde_batch_int(&b, 0, 0, &v) && !sonde_batch_int(&b, 9, 0, &v)); /* wrong type, no column */
    CHECK(sonde_batch_weight(&b, 0) == 3 && sonde_batch_weight(&b, 2) == 1 && sonde_batch_weight(&b, 4) == 1);
    CHECK(sonde_batch_weight(&b, 5) == 0 && sonde_batch_events(&b) == 3 + 1 + 1 + 1 + 1);
}

static void accumulators(void) {
    static sonde_counters c;
    sonde_points out = {0};
    sonde_counters_add(&c, 0, 2, (const char *[]){"POST", "5xx"}, 1);
    sonde_counters_add(&c, 1, 1, (const char *[]){"a"}, 1);
    sonde_counters_add(&c, 0, 2, (const char *[]){"GET", "2xx"}, 1);
    sonde_counters_add(&c, 0, 2, (const char *[]){"GET", "2xx"}, 2);
    sonde_counters_add(&c, 0, 2, (const char *[]){"GET", "2xx"}, -1);
    sonde_counters_add(&c, 0, 2, (const char *[]){"GET", "2xx"}, NAN);
    sonde_counters_add(&c, 0, 2, (const char *[]){"GET", "2xx"}, INFINITY);
    for (int i = 0; i < 100; i++) { /* past the first table size */
        char label[8];
        snprintf(label, sizeof label, "k%02d", i);
        sonde_counters_add(&c, 2, 1, (const char *[]){label}, i);
    }
    sonde_counters_drain(&c, &out);
    CHECK(out.len == 103);
    CHECK(out.ptr[0].metric == 0 && str_is(&out.ptr[0].labels.ptr[0], "GET") && out.ptr[0].value.val.counter == 3);
    CHECK(out.ptr[1].metric == 0 && str_is(&out.ptr[1].labels.ptr[0], "POST"));
    CHECK(out.ptr[2].metric == 1 && out.ptr[3].metric == 2 && str_is(&out.ptr[3].labels.ptr[0], "k00"));
    CHECK(str_is(&out.ptr[102].labels.ptr[0], "k99") && out.ptr[102].value.val.counter == 99);
    size_t before = out.len;
    sonde_counters_drain(&c, &out);
    CHECK(out.len == before); /* nothing new since */

    static sonde_histograms h;
    sonde_histograms_declare(&h, 3, 2, (double[]){100, 250});
    double values[] = {0, 100, 100.5, 250, 251, 1e9, NAN};
    for (size_t i = 0; i < 7; i++) sonde_histograms_observe_n(&h, 3, 1, (const char *[]){"r"}, values[i], 1);
    sonde_histograms_observe_n(&h, 4, 1, (const char *[]){"r"}, 1, 1); /* undeclared */
    sonde_histograms_observe_n(&h, 3, 1, (const char *[]){"s"}, 1, 0); /* zero count */
    CHECK(sonde_histograms_bucket_of(&h, 3, 100) == 0 && sonde_histograms_bucket_of(&h, 3, 101) == 1);
    CHECK(sonde_histograms_bucket_of(&h, 3, INFINITY) == -1 && sonde_histograms_bucket_of(&h, 9, 1) == -1);
    sonde_points hs = {0};
    sonde_histograms_drain(&h, &hs);
    CHECK(hs.len == 1 && hs.ptr[0].value.tag == SONDE_COLLECTOR_TYPES_METRIC_VALUE_HISTOGRAM);
    sonde_collector_types_histogram_delta_t *d = &hs.ptr[0].value.val.histogram;
    CHECK(d->buckets.len == 3 && d->buckets.ptr[0] == 2 && d->buckets.ptr[1] == 2 && d->buckets.ptr[2] == 2);
    CHECK(d->count == 6 && d->sum == 0 + 100 + 100.5 + 250 + 251 + 1e9);

    static sonde_gauges g;
    sonde_gauges_set(&g, 0, 0, NULL, 1);
    sonde_gauges_set(&g, 0, 0, NULL, 5);
    sonde_gauges_set(&g, 0, 0, NULL, NAN);
    sonde_points gs = {0};
    sonde_gauges_drain(&g, &gs);
    CHECK(gs.len == 1 && gs.ptr[0].value.tag == SONDE_COLLECTOR_TYPES_METRIC_VALUE_GAUGE && gs.ptr[0].value.val.gauge == 5);
}

static void info_and_host(void) {
    sonde_info_builder info;
    memset(&info, 0, sizeof info);
    sonde_info_set(&info, "x", "1.0", "d");
    sonde_info_event(&info, "http.request", 2, (sonde_field[]){{"method", SONDE_STR}, {"status", SONDE_INT}});
    sonde_info_counter(&info, "c", "1", "", 1, (const char *[]){"k"});
    sonde_info_histogram(&info, "h", "us", "", 0, NULL, 2, (double[]){1, 2});
    CHECK(str_is(&info.name, "x") && info.events.len == 1 && info.events.ptr[0].fields.len == 2);
    CHECK(info.events.ptr[0].fields.ptr[1].type == SONDE_COLLECTOR_TYPES_FIELD_TYPE_INT);
    CHECK(info.metrics.len == 2 && info.metrics.ptr[1].kind == SONDE_COLLECTOR_TYPES_METRIC_KIND_HISTOGRAM);
    CHECK(info.metrics.ptr[1].buckets.len == 2 && str_is(&info.metrics.ptr[0].label_keys.ptr[0], "k"));
    char *mode = sonde_config("mode");
    CHECK(mode != NULL && strcmp(mode, "loop") == 0);
    free(mode);
    CHECK(sonde_config("other") == NULL);
    sonde_log(SONDE_WARN, "careful");
    CHECK(strcmp(logged, "1 careful") == 0);
}

int main(void) {
    batch_accessors();
    accumulators();
    info_and_host();
    if (failures == 0) printf("C SDK: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
