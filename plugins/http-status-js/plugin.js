/**
 * `http-status` in JavaScript: counts HTTP requests per method and status class.
 *
 * The same plugin as `plugins/http-status` (Rust), built with componentize-js:
 * it reads the `method` (str) and `status` (int) fields of `http.request`
 * events and reports one counter, `http.requests`, labelled by `method`
 * (`GET HEAD POST PUT DELETE PATCH OPTIONS CONNECT TRACE`, matched exactly, or
 * `OTHER`) and `status_class` (`1xx` to `5xx`, or `other`).
 */

import { Counters, counter, event, exportCollector } from './sonde.js';

/** Methods reported by name, in label order; anything else is `OTHER`. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'CONNECT', 'TRACE'];
const LABELS = [...METHODS, 'OTHER'];
/** `status_class` labels; the last one is for statuses outside 100..=599. */
const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'other'];

/** Field columns, in the declared order. */
const METHOD = 0;
const STATUS = 1;
/** Metric index of `http.requests`. */
const REQUESTS = 0;

/** The `method` label index of a request method (`OTHER` if unknown). */
function methodIndex(method) {
  const i = METHODS.indexOf(method);
  return i < 0 ? METHODS.length : i;
}

/** The `status_class` label index of a status code. */
function classIndex(status) {
  return status !== null && status >= 100 && status <= 599
    ? Math.floor(status / 100) - 1
    : CLASSES.length - 1;
}

class HttpStatus {
  /** Increments since the last `collect`. */
  counters = new Counters();

  static info() {
    return {
      name: 'http-status',
      version: '0.1.0-js',
      description: 'HTTP requests per method and status class (1xx..5xx, other).',
      events: [event('http.request', [['method', 'str'], ['status', 'int']])],
      metrics: [
        counter('http.requests', '1', 'HTTP requests, by method and status class.', [
          'method',
          'status_class',
        ]),
      ],
    };
  }

  onEvents(batch) {
    // Tally the batch in a fixed table, classifying each distinct method
    // string once; each row stands for its weight in requests.
    const tally = new Float64Array(LABELS.length * CLASSES.length);
    const methods = batch.str(METHOD).mapDistinct(methodIndex);
    const statuses = batch.int(STATUS);
    const weights = batch.weights();
    for (let i = 0; i < batch.length; i++) {
      tally[methods[i] * CLASSES.length + classIndex(statuses[i])] += weights[i];
    }
    tally.forEach((n, slot) => {
      if (n > 0) {
        const m = Math.floor(slot / CLASSES.length);
        this.counters.add(REQUESTS, [LABELS[m], CLASSES[slot % CLASSES.length]], n);
      }
    });
  }

  collect(out) {
    this.counters.drain(out);
  }
}

export const collector = exportCollector(HttpStatus);
