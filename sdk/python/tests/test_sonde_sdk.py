"""Unit tests of the Python SDK, run natively by `cargo xtask test` (with the
bindings `componentize-py bindings` generates on the path)."""

import unittest

import sonde_sdk as sdk
from wit_world.imports import types


def str_column(values):
    """A dictionary-encoded column of ``values`` (``None``: missing)."""
    dict_, codes = [], []
    for v in values:
        if v is None:
            codes.append(sdk.MISSING)
            continue
        if v not in dict_:
            dict_.append(v)
        codes.append(dict_.index(v))
    data, ends = b"", []
    for d in dict_:
        data += d.encode()
        ends.append(len(data))
    return types.Column(types.ColumnData_Str(types.StrColumn(data, ends, codes)), [])


def sample(weights=()):
    return types.EventBatch(0, 4, [
        str_column(["GET", "POST", None, "GET"]),
        types.Column(types.ColumnData_Int([200, 0, 503, 404]), [1]),
        types.Column(types.ColumnData_Float([1.5, 2.5, 0.0, 4.0]), [2]),
    ], list(weights))


class BatchTest(unittest.TestCase):
    def test_reads_each_column_type(self):
        b = sdk.Batch(sample())
        self.assertEqual((len(b), b.kind), (4, 0))
        self.assertEqual(list(b.str(0)), ["GET", "POST", None, "GET"])
        self.assertEqual(b.int(1), [200, None, 503, 404])
        self.assertEqual(b.float(2), [1.5, 2.5, None, 4.0])
        self.assertEqual(b.str(0).dict, ["GET", "POST"])
        self.assertEqual((b.str(0).code(3), b.str(0).code(2)), (0, None))

    def test_rows_stand_for_their_weights(self):
        self.assertEqual((sdk.Batch(sample()).events(), sdk.Batch(sample()).weights()), (4, [1] * 4))
        b = sdk.Batch(sample([3, 1, 0, 7]))
        self.assertEqual(b.weights(), [3, 1, 1, 7])  # a malformed 0 counts as one
        self.assertEqual((b.events(), b.weight(0), b.weight(4)), (12, 3, 0))
        b = sdk.Batch(sample([5]))
        self.assertEqual((b.events(), b.weight(3)), (8, 1))

    def test_wrong_types_and_bad_input_read_as_missing(self):
        b = sdk.Batch(sample())
        self.assertEqual(b.int(0), [None] * 4)
        self.assertEqual(list(b.str(1)), [None] * 4)
        self.assertEqual(b.int(99), [None] * 4)
        bad = types.EventBatch(0, 5, [
            types.Column(types.ColumnData_Str(types.StrColumn(b"ok\xff\xfe", [2, 4, 99], [0, 1, 2, 7])), []),
            types.Column(types.ColumnData_Int([1, 2]), [0, 1000]),
        ], [])
        b = sdk.Batch(bad)
        self.assertEqual(list(b.str(0)), ["ok", None, None, None, None])
        self.assertEqual(b.int(1), [None, 2, None, None, None])

    def test_map_distinct_calls_once_per_value(self):
        calls = []
        col = sdk.Batch(types.EventBatch(0, 1000, [str_column(["a", "bb", None] * 333 + ["a"])], [])).str(0)
        lens = col.map_distinct(lambda v: calls.append(v) or (len(v) if v else 0))
        self.assertEqual(len(calls), 3)
        self.assertEqual(lens[:4], [1, 2, 0, 1])


class AccumulatorTest(unittest.TestCase):
    def test_counters_report_increments_and_reset(self):
        c = sdk.Counters()
        c.inc(0, ["GET", "2xx"])
        c.add(0, ["GET", "2xx"], 2)
        c.add(0, ["POST", "5xx"], 1)
        c.inc(1, ["a"])
        for bad in (-1, float("nan"), float("inf")):
            c.add(0, ["GET", "2xx"], bad)
        out = []
        c.drain(out)
        self.assertEqual([(p.metric, p.labels, p.value) for p in out], [
            (0, ["GET", "2xx"], types.MetricValue_Counter(3.0)),
            (0, ["POST", "5xx"], types.MetricValue_Counter(1.0)),
            (1, ["a"], types.MetricValue_Counter(1.0)),
        ])
        self.assertTrue(c.is_empty())
        out.clear()
        c.drain(out)
        self.assertEqual(out, [])

    def test_histograms_bucket_inclusively(self):
        h = sdk.Histograms()
        h.declare(3, [100, 250])
        for v in (0, 100, 100.5, 250, 251, 1e9, float("nan")):
            h.observe(3, ["r"], v)
        h.observe(4, ["r"], 1)  # undeclared
        h.observe_n(3, ["s"], 10, 0)  # zero count: no series
        out = []
        h.drain(out)
        self.assertEqual(len(out), 1)
        self.assertEqual(out[0].value, types.MetricValue_Histogram(
            types.HistogramDelta([2, 2, 2], 6, 0 + 100 + 100.5 + 250 + 251 + 1e9)))
        self.assertEqual((h.bucket_of(3, 100), h.bucket_of(3, 101), h.bucket_of(9, 1)), (0, 1, None))

    def test_histograms_from_info_and_gauges(self):
        info = types.PluginInfo("x", "0", "", [sdk.event("e", [])], [
            sdk.counter("c", "1", "", []), sdk.histogram("h", "us", "", [], [1.0])])
        h = sdk.Histograms.from_info(info)
        h.observe(0, [], 1)
        h.observe_weighted(1, [], [(2, 3), (0.5, 1)])
        out = []
        h.drain(out)
        self.assertEqual([(p.metric, p.value.value.buckets, p.value.value.count) for p in out],
                         [(1, [1, 3], 4)])
        g = sdk.Gauges()
        g.set(0, [], 1)
        g.set(0, [], 5)
        g.set(0, [], float("nan"))
        out = []
        g.drain(out)
        self.assertEqual(out[0].value, types.MetricValue_Gauge(5.0))


class ExportTest(unittest.TestCase):
    def test_state_survives_a_new_export_object_per_call(self):
        class Count:
            made = 0

            def __init__(self):
                Count.made += 1
                self.counters = sdk.Counters()

            @staticmethod
            def info():
                return types.PluginInfo("count", "0", "", [], [])

            def on_events(self, batch):
                self.counters.add(0, [], batch.events())

            def collect(self, out):
                self.counters.drain(out)

        Collector = sdk.export(Count)
        # componentize-py makes a new object for every call.
        Collector().on_events(sample([2, 1, 1, 1]))
        Collector().on_events(sample())
        self.assertEqual(Collector().info().name, "count")
        out = Collector().collect()
        self.assertEqual(out[0].value, types.MetricValue_Counter(9.0))
        self.assertEqual(Collector().collect(), [])
        self.assertEqual(Count.made, 1)

    def test_config_lists(self):
        self.assertEqual(sdk.parse_list(" /a, /b/{id} ,,"), ["/a", "/b/{id}"])
        saved = sdk._host.config
        try:
            sdk._host.config = lambda key: "x, y" if key == "routes" else None
            self.assertEqual((sdk.config_list("routes"), sdk.config_list("none")), (["x", "y"], None))
        finally:
            sdk._host.config = saved


if __name__ == "__main__":
    unittest.main()
