// Unit tests of the JavaScript SDK, run natively by `cargo xtask test`:
// node --import ./sdk/js/test/register.mjs --test sdk/js/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  Batch, Counters, Gauges, Histograms, MISSING, config, configList, counter, event, exportCollector,
  histogram, parseList, warn,
} from '../sonde.js';
import { configTable, lines } from './host.mjs';

function strColumn(values) {
  const dict = [];
  const codes = values.map((v) => {
    if (v === null) return MISSING;
    if (!dict.includes(v)) dict.push(v);
    return dict.indexOf(v);
  });
  const enc = new TextEncoder();
  const ends = [];
  let bytes = new Uint8Array(0);
  for (const d of dict) {
    const b = enc.encode(d);
    const next = new Uint8Array(bytes.length + b.length);
    next.set(bytes);
    next.set(b, bytes.length);
    bytes = next;
    ends.push(bytes.length);
  }
  return { data: { tag: 'str', val: { dictBytes: bytes, dictEnds: Uint32Array.from(ends), codes: Uint32Array.from(codes) } }, missing: new Uint32Array(0) };
}

function sample(weights = []) {
  return {
    kind: 0,
    len: 4,
    columns: [
      strColumn(['GET', 'POST', null, 'GET']),
      { data: { tag: 'int', val: BigInt64Array.from([200n, 0n, 503n, 404n]) }, missing: Uint32Array.from([1]) },
      { data: { tag: 'float', val: Float64Array.from([1.5, 2.5, 0, 4]) }, missing: Uint32Array.from([2]) },
    ],
    weights: Uint32Array.from(weights),
  };
}

test('reads each column type', () => {
  const b = new Batch(sample());
  assert.equal(b.length, 4);
  assert.deepEqual(b.str(0).values(), ['GET', 'POST', null, 'GET']);
  assert.deepEqual(b.int(1), [200, null, 503, 404]);
  assert.deepEqual(b.float(2), [1.5, 2.5, null, 4]);
  assert.deepEqual(b.str(0).dict, ['GET', 'POST']);
  assert.deepEqual([b.str(0).code(3), b.str(0).code(2)], [0, null]);
  assert.deepEqual(b.int(0), [null, null, null, null]);
  assert.deepEqual(b.str(99).values(), [null, null, null, null]);
});

test('rows stand for their weights', () => {
  assert.equal(new Batch(sample()).events(), 4);
  const b = new Batch(sample([3, 1, 0, 7]));
  assert.deepEqual(b.weights(), [3, 1, 1, 7]);
  assert.deepEqual([b.events(), b.weight(0), b.weight(4)], [12, 3, 0]);
  const short = new Batch(sample([5]));
  assert.deepEqual([short.events(), short.weight(3)], [8, 1]);
});

test('malformed strings read as missing; mapDistinct calls once per value', () => {
  const raw = { kind: 0, len: 5, weights: new Uint32Array(0), columns: [
    { data: { tag: 'str', val: { dictBytes: Uint8Array.from([111, 107, 0xff, 0xfe]), dictEnds: Uint32Array.from([2, 4, 99]), codes: Uint32Array.from([0, 1, 2, 7]) } }, missing: new Uint32Array(0) },
  ] };
  assert.deepEqual(new Batch(raw).str(0).values(), ['ok', null, null, null, null]);
  let calls = 0;
  const lens = new Batch(sample()).str(0).mapDistinct((v) => (calls++, v ? v.length : 0));
  assert.deepEqual([calls, lens], [3, [3, 4, 0, 3]]);
});

test('counters report increments and reset', () => {
  const c = new Counters();
  c.inc(0, ['GET', '2xx']);
  c.add(0, ['GET', '2xx'], 2);
  c.add(0, ['POST', '5xx'], 1);
  c.inc(1, ['a']);
  for (const bad of [-1, NaN, Infinity]) c.add(0, ['GET', '2xx'], bad);
  const out = [];
  c.drain(out);
  assert.deepEqual(out, [
    { metric: 0, labels: ['GET', '2xx'], value: { tag: 'counter', val: 3 } },
    { metric: 0, labels: ['POST', '5xx'], value: { tag: 'counter', val: 1 } },
    { metric: 1, labels: ['a'], value: { tag: 'counter', val: 1 } },
  ]);
  const again = [];
  c.drain(again);
  assert.deepEqual(again, []);
});

test('histograms bucket inclusively; gauges keep the last value', () => {
  const h = Histograms.fromInfo({ metrics: [counter('c', '1', '', []), histogram('h', 'us', '', [], [100, 250])] });
  for (const v of [0, 100, 100.5, 250, 251, 1e9, NaN]) h.observe(1, ['r'], v);
  h.observe(0, ['r'], 1); // a counter: not declared as a histogram
  h.observeN(1, ['s'], 10, 0);
  const out = [];
  h.drain(out);
  assert.equal(out.length, 1);
  assert.deepEqual(out[0].value.val.buckets, BigUint64Array.from([2n, 2n, 2n]));
  assert.equal(out[0].value.val.count, 6n);
  assert.equal(out[0].value.val.sum, 0 + 100 + 100.5 + 250 + 251 + 1e9);
  const g = new Gauges();
  g.set(0, [], 1);
  g.set(0, [], 5);
  g.set(0, [], NaN);
  const gs = [];
  g.drain(gs);
  assert.deepEqual(gs, [{ metric: 0, labels: [], value: { tag: 'gauge', val: 5 } }]);
});

test('the export keeps one instance; host imports pass through', () => {
  let made = 0;
  class Count {
    counters = new Counters();
    constructor() { made++; }
    static info() { return { name: 'count', version: '0', description: '', events: [event('e', [['n', 'int']])], metrics: [] }; }
    onEvents(batch) { this.counters.add(0, [], batch.events()); }
    collect(out) { this.counters.drain(out); }
  }
  const collector = exportCollector(Count);
  collector.onEvents(sample([2, 1, 1, 1]));
  collector.onEvents(sample());
  assert.equal(collector.info().events[0].fields[0].type, 'int');
  assert.deepEqual(collector.collect()[0].value, { tag: 'counter', val: 9 });
  assert.deepEqual(collector.collect(), []);
  assert.equal(made, 1);
  configTable.set('routes', ' /a, /b/{id} ,,');
  assert.deepEqual([configList('routes'), config('none'), parseList('x,,y ')], [['/a', '/b/{id}'], undefined, ['x', 'y']]);
  warn('careful');
  assert.deepEqual(lines.at(-1), ['warn', 'careful']);
});
