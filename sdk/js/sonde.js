/**
 * Write sonde metric collectors in JavaScript.
 *
 * A sonde collector is a WebAssembly component implementing the
 * `sonde:collector@0.2.0` WIT contract (`wit/collector.wit`), built from one
 * ES module with componentize-js and `--disable all` (no WASI import at all:
 * no clock, timer, random source, console or network). This module mirrors
 * the Rust SDK (`crates/sonde-sdk`) name for name:
 *
 * - {@link Batch}, a typed view over a columnar batch (`int`, `float`, `str`,
 *   `weights`);
 * - delta accumulators implementing `collect`'s semantics: {@link Counters},
 *   {@link Histograms}, {@link Gauges};
 * - the host imports {@link log} and {@link config}, with {@link configList},
 *   {@link parseList} and {@link error}, {@link warn}, {@link info},
 *   {@link debug};
 * - declaration helpers ({@link counter}, {@link gauge}, {@link histogram},
 *   {@link event});
 * - {@link exportCollector}, which turns a plain class into the component's
 *   `collector` export.
 *
 * A complete collector (`plugin.js`, beside which the build puts this file):
 *
 * ```js
 * import { Counters, counter, event, exportCollector } from './sonde.js';
 *
 * class Methods {
 *   counters = new Counters();
 *   static info() {
 *     return {
 *       name: 'methods', version: '0.1.0', description: 'Requests per HTTP method.',
 *       events: [event('http.request', [['method', 'str']])],
 *       metrics: [counter('http.methods', '1', 'Requests per method.', ['method'])],
 *     };
 *   }
 *   onEvents(batch) {
 *     const weights = batch.weights();
 *     batch.str(0).values().forEach((m, i) => this.counters.add(0, [m ?? 'none'], weights[i]));
 *   }
 *   collect(out) { this.counters.drain(out); }
 * }
 *
 * export const collector = exportCollector(Methods);
 * ```
 *
 * WIT values in JavaScript (as componentize-js maps them): records are
 * objects with camelCase keys, enums are strings (`'counter'`, `'int'`,
 * `'info'`), variants are `{ tag, val }`, `s64`/`u64` are BigInt, `f64` a
 * number, `list<u8>` a `Uint8Array`.
 *
 * @module sonde
 */

import { log as hostLog, config as hostConfig } from 'sonde:collector/host@0.2.0';

/** A string column's code for "this row has no such string". */
export const MISSING = 0xffffffff;

// ---------------------------------------------------------------------------
// Declarations
// ---------------------------------------------------------------------------

/**
 * @typedef {'counter' | 'gauge' | 'histogram'} MetricKind
 * @typedef {'int' | 'float' | 'str'} FieldType
 * @typedef {{ name: string, kind: MetricKind, unit: string, description: string,
 *             labelKeys: string[], buckets: Float64Array | number[] }} MetricDecl
 * @typedef {{ kind: string, fields: { name: string, type: FieldType }[] }} EventDecl
 * @typedef {{ name: string, version: string, description: string,
 *             events: EventDecl[], metrics: MetricDecl[] }} PluginInfo
 * @typedef {{ tag: 'counter', val: number } | { tag: 'gauge', val: number }
 *           | { tag: 'histogram', val: { buckets: BigUint64Array, count: bigint, sum: number } }} MetricValue
 * @typedef {{ metric: number, labels: string[], value: MetricValue }} MetricPoint
 */

function decl(kind, name, unit, description, labelKeys, buckets) {
  return { name, kind, unit, description, labelKeys: [...labelKeys], buckets: new Float64Array(buckets) };
}

/**
 * A counter: `collect` returns increments.
 * @param {string} name dotted lower-case name, e.g. `http.requests`
 * @param {string} unit e.g. `'1'` for plain counts
 * @param {string} description
 * @param {string[]} labelKeys the keys every point carries values for, in order
 * @returns {MetricDecl}
 */
export function counter(name, unit, description, labelKeys) {
  return decl('counter', name, unit, description, labelKeys, []);
}

/**
 * A gauge: `collect` returns the current value.
 * @returns {MetricDecl}
 */
export function gauge(name, unit, description, labelKeys) {
  return decl('gauge', name, unit, description, labelKeys, []);
}

/**
 * A histogram over `buckets`: ascending, finite upper bounds (inclusive); an
 * implicit last bucket holds everything above the last.
 * @returns {MetricDecl}
 */
export function histogram(name, unit, description, labelKeys, buckets) {
  return decl('histogram', name, unit, description, labelKeys, buckets);
}

/**
 * An event kind and the fields read from it, in the order in which a batch
 * carries their columns.
 * @param {string} kind e.g. `http.request`
 * @param {[string, FieldType][]} fields
 * @returns {EventDecl}
 */
export function event(kind, fields) {
  return { kind, fields: fields.map(([name, type]) => ({ name, type })) };
}

// ---------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------

const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * A string column of a {@link Batch}, dictionary-encoded: each row refers to
 * one of the batch's distinct values by its code. The dictionary is decoded
 * once; an entry that is not valid UTF-8 or whose bounds are inconsistent
 * reads as missing (`null`), as does a code past the dictionary.
 */
export class StrColumn {
  /** @param {number} len @param {any} raw the WIT `str-column`, or null */
  constructor(len, raw) {
    /** Number of rows. */
    this.length = len;
    /** @type {(string | null)[]} the distinct values, indexed by code */
    this.dict = [];
    this.codes = raw ? raw.codes : new Uint32Array(0);
    if (!raw) return;
    const bytes = raw.dictBytes;
    let start = 0;
    for (const end of raw.dictEnds) {
      let value = null;
      if (start <= end && end <= bytes.length) {
        try {
          value = decoder.decode(bytes.subarray(start, end));
        } catch {
          value = null;
        }
      }
      this.dict.push(value);
      start = end;
    }
  }

  /** The dictionary code of row `i`, or `null` if it lacks the field. */
  code(i) {
    if (i < 0 || i >= this.length || i >= this.codes.length) return null;
    const c = this.codes[i];
    return c < this.dict.length ? c : null;
  }

  /** The value of row `i`, or `null` if it lacks the field. */
  get(i) {
    const c = this.code(i);
    return c === null ? null : this.dict[c];
  }

  /**
   * `f` of every row's value, calling `f` once per distinct value (and once
   * for "missing") rather than once per row.
   * @template T
   * @param {(value: string | null) => T} f
   * @returns {T[]}
   */
  mapDistinct(f) {
    const table = this.dict.map(f);
    const none = f(null);
    const out = new Array(this.length);
    const codes = this.codes;
    for (let i = 0; i < this.length; i++) {
      const c = i < codes.length ? codes[i] : MISSING;
      out[i] = c < table.length ? table[c] : none;
    }
    return out;
  }

  /** Every row's value, in order. @returns {(string | null)[]} */
  values() {
    return this.mapDistinct((v) => v);
  }
}

/**
 * A read-only view over an `event-batch` received by `onEvents`.
 *
 * A batch holds `batch.length` *rows*; row `i` stands for `batch.weight(i)`
 * events that were identical over the fields this plugin declared (the host
 * merges them). Count events with the weights, never with the rows. Column
 * `i` is field `i` of the event kind's declared fields. Asking for a column
 * with the wrong accessor, or past the end, never throws: every row reads as
 * missing (`null`).
 */
export class Batch {
  constructor(raw) {
    /** The underlying WIT record. */
    this.raw = raw;
    /** Number of rows. */
    this.length = raw.len;
  }

  /** Index of the batch's event kind in the plugin's declared `events`. */
  get kind() {
    return this.raw.kind;
  }

  /** How many events row `i` stands for: at least 1, or 0 past the end. */
  weight(i) {
    if (i < 0 || i >= this.length) return 0;
    const w = this.raw.weights;
    return i < w.length ? Math.max(w[i], 1) : 1;
  }

  /** The weight of every row, in order (a malformed 0 reads as 1). @returns {number[]} */
  weights() {
    const w = this.raw.weights;
    const out = new Array(this.length);
    for (let i = 0; i < this.length; i++) out[i] = i < w.length ? Math.max(w[i], 1) : 1;
    return out;
  }

  /** The number of events in the batch: the sum of the weights. */
  events() {
    return this.raw.weights.length ? this.weights().reduce((a, b) => a + b, 0) : this.length;
  }

  #numbers(col, tag, convert) {
    const out = new Array(this.length).fill(null);
    const c = this.raw.columns[col];
    if (!c || c.data.tag !== tag) return out;
    const values = c.data.val;
    const n = Math.min(this.length, values.length);
    for (let i = 0; i < n; i++) out[i] = convert(values[i]);
    for (const i of c.missing) if (i < this.length) out[i] = null;
    return out;
  }

  /**
   * Column `col` as integers (numbers: exact up to 2^53), one per row, `null`
   * where the row lacks the field or the column is not an `int` column.
   * @returns {(number | null)[]}
   */
  int(col) {
    return this.#numbers(col, 'int', Number);
  }

  /** Column `col` as floats, one per row (`null` where missing). @returns {(number | null)[]} */
  float(col) {
    return this.#numbers(col, 'float', (v) => v);
  }

  /** Column `col` as strings (every row missing if not a `str` column). */
  str(col) {
    const c = this.raw.columns[col];
    return new StrColumn(this.length, c && c.data.tag === 'str' ? c.data.val : null);
  }
}

// ---------------------------------------------------------------------------
// Delta accumulators
// ---------------------------------------------------------------------------

function compareKeys(a, b) {
  if (a.metric !== b.metric) return a.metric - b.metric;
  const n = Math.min(a.labels.length, b.labels.length);
  for (let i = 0; i < n; i++) {
    if (a.labels[i] !== b.labels[i]) return a.labels[i] < b.labels[i] ? -1 : 1;
  }
  return a.labels.length - b.labels.length;
}

/** Series keyed by (metric, labels), drained by metric, then label values. */
class SeriesMap {
  constructor() {
    this.map = new Map();
  }

  entry(metric, labels, init) {
    const key = JSON.stringify([metric, labels]);
    let e = this.map.get(key);
    if (e === undefined) {
      e = { metric, labels: [...labels], value: init() };
      this.map.set(key, e);
    }
    return e;
  }

  drain(out, value) {
    const entries = [...this.map.values()].sort(compareKeys);
    this.map = new Map();
    for (const e of entries) out.push({ metric: e.metric, labels: e.labels, value: value(e.value) });
  }
}

/** Counter increments per series since the last {@link Counters#drain}. */
export class Counters {
  #series = new SeriesMap();

  /**
   * Adds `delta` to counter `metric` (index into the declared metrics) with
   * `labels` (values in its `labelKeys` order). A negative, NaN or infinite
   * delta is ignored; `0` creates the series.
   * @param {number} metric @param {string[]} labels @param {number} delta
   */
  add(metric, labels, delta) {
    delta = Number(delta);
    if (!(Number.isFinite(delta) && delta >= 0)) return;
    this.#series.entry(metric, labels, () => ({ total: 0 })).value.total += delta;
  }

  /** Adds 1 to a series. */
  inc(metric, labels) {
    this.add(metric, labels, 1);
  }

  /** Number of series with pending increments. */
  get size() {
    return this.#series.map.size;
  }

  /**
   * Appends one counter point per series added to since the last drain, then
   * forgets them. @param {MetricPoint[]} out
   */
  drain(out) {
    this.#series.drain(out, (v) => ({ tag: 'counter', val: v.total }));
  }
}

/** Current gauge values per series, set since the last {@link Gauges#drain}. */
export class Gauges {
  #series = new SeriesMap();

  /** Sets gauge `metric` with `labels` to `value` (non-finite values are ignored). */
  set(metric, labels, value) {
    value = Number(value);
    if (!Number.isFinite(value)) return;
    this.#series.entry(metric, labels, () => ({ last: 0 })).value.last = value;
  }

  /** Number of series set since the last drain. */
  get size() {
    return this.#series.map.size;
  }

  /** Appends one gauge point per series set since the last drain, then forgets them. */
  drain(out) {
    this.#series.drain(out, (v) => ({ tag: 'gauge', val: v.last }));
  }
}

/**
 * Histogram increments per series since the last {@link Histograms#drain}.
 * Each histogram metric is declared with its bounds ({@link Histograms.fromInfo}
 * or {@link Histograms#declare}); a value `v` falls in the first bucket whose
 * bound `b` has `v <= b`, or in the overflow bucket.
 */
export class Histograms {
  #bounds = new Map();
  #series = new SeriesMap();

  /** Declares every histogram metric of `info` with its buckets. @param {PluginInfo} info */
  static fromInfo(info) {
    const h = new Histograms();
    info.metrics.forEach((m, i) => {
      if (m.kind === 'histogram') h.declare(i, m.buckets);
    });
    return h;
  }

  /** Declares histogram `metric` with ascending upper `bounds`. */
  declare(metric, bounds) {
    this.#bounds.set(metric, Float64Array.from(bounds));
  }

  /** The bucket `metric` puts `value` in, or `null` (undeclared, non-finite). */
  bucketOf(metric, value) {
    const bounds = this.#bounds.get(metric);
    if (bounds === undefined || !Number.isFinite(value)) return null;
    let lo = 0;
    let hi = bounds.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (bounds[mid] < value) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Records one observation (ignored if undeclared or non-finite). */
  observe(metric, labels, value) {
    this.observeN(metric, labels, value, 1);
  }

  /** Records `n` observations of the same `value`. */
  observeN(metric, labels, value, n) {
    const bucket = this.bucketOf(metric, Number(value));
    if (bucket === null || !(n > 0)) return;
    const size = this.#bounds.get(metric).length + 1;
    const h = this.#series.entry(metric, labels, () => ({
      buckets: new Array(size).fill(0),
      count: 0,
      sum: 0,
    })).value;
    h.buckets[bucket] += n;
    h.count += n;
    h.sum += Number(value) * n;
  }

  /** Number of series with pending observations. */
  get size() {
    return this.#series.map.size;
  }

  /** Appends one histogram point per series observed since the last drain. */
  drain(out) {
    this.#series.drain(out, (h) => ({
      tag: 'histogram',
      val: {
        buckets: BigUint64Array.from(h.buckets, (n) => BigInt(n)),
        count: BigInt(h.count),
        sum: h.sum,
      },
    }));
  }
}

// ---------------------------------------------------------------------------
// Host imports
// ---------------------------------------------------------------------------

/**
 * Logs `message` under the plugin's name (rate-limited by the host: lines
 * past the plugin's budget are dropped, long lines cut).
 * @param {'error' | 'warn' | 'info' | 'debug'} level
 * @param {string} message
 */
export function log(level, message) {
  hostLog(level, String(message));
}

/** Logs at level `error`. */
export function error(message) {
  log('error', message);
}

/** Logs at level `warn`. */
export function warn(message) {
  log('warn', message);
}

/** Logs at level `info`. */
export function info(message) {
  log('info', message);
}

/** Logs at level `debug`. */
export function debug(message) {
  log('debug', message);
}

/**
 * The value of `key` in the plugin's `[plugin.config]` table of the
 * operator's manifest, or `undefined` if unset.
 * @returns {string | undefined}
 */
export function config(key) {
  return hostConfig(key) ?? undefined;
}

/** Splits `value` at commas, trims each item and drops empty ones. */
export function parseList(value) {
  return value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

/** The config value `key` as a comma-separated list; `undefined` if unset. */
export function configList(key) {
  const v = config(key);
  return v === undefined ? undefined : parseList(v);
}

// ---------------------------------------------------------------------------
// The export
// ---------------------------------------------------------------------------

/**
 * The `collector` export for the class `cls`: a static `info()` returning a
 * {@link PluginInfo}, and methods `onEvents(batch)` (a {@link Batch}) and
 * `collect(out)` that appends {@link MetricPoint}s (usually by draining its
 * accumulators). Its one instance is made (`new cls()`; read configuration
 * in the constructor) on the first `onEvents` or `collect` call and kept.
 *
 * ```js
 * export const collector = exportCollector(MyCollector);
 * ```
 */
export function exportCollector(cls) {
  let instance = null;
  const get = () => (instance ??= new cls());
  return {
    info: () => cls.info(),
    onEvents(batch) {
      get().onEvents(new Batch(batch));
    },
    collect() {
      const out = [];
      get().collect(out);
      return out;
    },
  };
}
