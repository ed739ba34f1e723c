/* `http-status` in C: counts HTTP requests per method and status class.
 *
 * The same plugin as `plugins/http-status` (Rust), built with wit-bindgen c
 * and clang for wasm32 (no libc): it reads the `method` (str) and `status`
 * (int) fields of `http.request` events and reports one counter,
 * `http.requests`, labelled by `method` (`GET HEAD POST PUT DELETE PATCH
 * OPTIONS CONNECT TRACE`, matched exactly, or `OTHER`) and `status_class`
 * (`1xx` to `5xx`, or `other`). */

#include "sonde.h"

/* Methods reported by name, in label order, then `OTHER` for anything else. */
static const char *const METHODS[] = {"GET",   "HEAD",    "POST",    "PUT",   "DELETE",
                                      "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER"};
#define KNOWN_METHODS 9
/* `status_class` labels; the last one is for statuses outside 100..=599. */
static const char *const CLASSES[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
#define NCLASSES 6

/* Field columns, in the declared order. */
enum { METHOD = 0, STATUS = 1 };
/* Metric index of `http.requests`. */
enum { REQUESTS = 0 };

/* Increments since the last `collect`. */
static sonde_counters counters;

void sonde_info(sonde_info_builder *info) {
    sonde_info_set(info, "http-status", "0.1.0-c",
                   "HTTP requests per method and status class (1xx..5xx, other).");
    sonde_info_event(info, "http.request", 2,
                     (sonde_field[]){{"method", SONDE_STR}, {"status", SONDE_INT}});
    sonde_info_counter(info, "http.requests", "1", "HTTP requests, by method and status class.",
                       2, (const char *[]){"method", "status_class"});
}

/* The `method` label index of a request method (`OTHER` if unknown). */
static size_t method_index(const sonde_str *m) {
    for (size_t i = 0; i < KNOWN_METHODS; i++) {
        if (strlen(METHODS[i]) == m->len && memcmp(METHODS[i], m->ptr, m->len) == 0) return i;
    }
    return KNOWN_METHODS;
}

void sonde_on_events(const sonde_batch *batch) {
    /* Classify each distinct method once (dictionary codes), tally the batch
     * in a fixed table, then fold the table into the counters. Each row
     * stands for its weight in requests. */
    enum { MAX_DICT = 256 };
    unsigned char by_code[MAX_DICT];
    size_t dict = sonde_batch_dict_len(batch, METHOD);
    for (size_t c = 0; c < dict && c < MAX_DICT; c++) {
        sonde_str m;
        by_code[c] = sonde_batch_dict(batch, METHOD, (uint32_t)c, &m) ? (unsigned char)method_index(&m)
                                                                      : KNOWN_METHODS;
    }
    uint64_t tally[KNOWN_METHODS + 1][NCLASSES] = {{0}};
    for (size_t i = 0; i < sonde_batch_len(batch); i++) {
        uint32_t code = sonde_batch_code(batch, METHOD, i);
        size_t m = KNOWN_METHODS;
        if (code < MAX_DICT) {
            m = by_code[code];
        } else if (code != SONDE_MISSING) {
            sonde_str s;
            if (sonde_batch_dict(batch, METHOD, code, &s)) m = method_index(&s);
        }
        int64_t status;
        size_t class = NCLASSES - 1;
        if (sonde_batch_int(batch, STATUS, i, &status) && status >= 100 && status <= 599) {
            class = (size_t)(status / 100 - 1);
        }
        tally[m][class] += sonde_batch_weight(batch, i);
    }
    for (size_t m = 0; m <= KNOWN_METHODS; m++) {
        for (size_t c = 0; c < NCLASSES; c++) {
            if (tally[m][c] > 0) {
                sonde_counters_add(&counters, REQUESTS, 2, (const char *[]){METHODS[m], CLASSES[c]},
                                   (double)tally[m][c]);
            }
        }
    }
}

void sonde_collect(sonde_points *out) {
    sonde_counters_drain(&counters, out);
}
