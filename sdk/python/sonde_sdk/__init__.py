"""Write sonde metric collectors in Python.

A sonde collector is a WebAssembly component implementing the
``sonde:collector@0.2.0`` WIT contract (``wit/collector.wit``). This package
mirrors the Rust SDK (``crates/sonde-sdk``) name for name:

- :class:`Batch`, a typed view over a columnar batch (:meth:`Batch.int`,
  :meth:`Batch.float`, :meth:`Batch.str`, :meth:`Batch.weights`);
- delta accumulators implementing ``collect``'s semantics:
  :class:`Counters`, :class:`Histograms`, :class:`Gauges`;
- the host imports :func:`log` and :func:`config`, with :func:`config_list`,
  :func:`parse_list` and :func:`error`, :func:`warn`, :func:`info`,
  :func:`debug`;
- declaration helpers (:func:`counter`, :func:`gauge`, :func:`histogram`,
  :func:`event`) and the WIT types (:class:`PluginInfo`, ...);
- :func:`export`, which turns a plain class into the component's export.

A complete collector (``plugin.py``)::

    from sonde_sdk import Batch, Counters, FieldType, PluginInfo, counter, event, export

    class Methods:
        def __init__(self) -> None:
            self.counters = Counters()

        @staticmethod
        def info() -> PluginInfo:
            return PluginInfo(
                name="methods", version="0.1.0", description="Requests per HTTP method.",
                events=[event("http.request", [("method", FieldType.STR)])],
                metrics=[counter("http.methods", "1", "Requests per method.", ["method"])])

        def on_events(self, batch: Batch) -> None:
            for method, weight in zip(batch.str(0), batch.weights()):
                self.counters.add(0, [method or "none"], weight)

        def collect(self, out: list) -> None:
            self.counters.drain(out)

    Collector = export(Methods)

Build it with ``componentize-py ... componentize plugin --stub-wasi`` (the
sonde repository's ``cargo xtask plugins`` does it; see ``docs/python.md``).

componentize-py creates a new object of the exported class for every call, so
:func:`export` keeps the one instance of your class at module level: state
kept in ``self`` survives from call to call, as in Rust. ``--stub-wasi``
leaves the component with no WASI import at all (the host grants none): a
call into WASI traps, the random seed is fixed at build time, and there is no
clock, file or socket.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar

from wit_world.imports import host as _host
from wit_world.imports import types as _types

__all__ = [
    "Batch", "StrColumn", "Counters", "Gauges", "Histograms",
    "log", "config", "config_list", "parse_list", "error", "warn", "info", "debug",
    "counter", "gauge", "histogram", "event", "export",
    "Level", "PluginInfo", "EventDecl", "FieldDecl", "FieldType", "MetricDecl",
    "MetricKind", "MetricPoint", "EventBatch", "HistogramDelta",
]

# The WIT types, re-exported under the Rust SDK's names.
Level = _host.Level
PluginInfo = _types.PluginInfo
EventDecl = _types.EventDecl
FieldDecl = _types.FieldDecl
FieldType = _types.FieldType
MetricDecl = _types.MetricDecl
MetricKind = _types.MetricKind
MetricPoint = _types.MetricPoint
EventBatch = _types.EventBatch
HistogramDelta = _types.HistogramDelta

#: A string column's code for "this row has no such string".
MISSING = 0xFFFF_FFFF

T = TypeVar("T")


# --------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------

def counter(name: str, unit: str, description: str, label_keys: Sequence[str]) -> MetricDecl:
    """A counter: ``collect`` returns increments. ``unit`` is e.g. ``"1"``
    for plain counts; ``label_keys`` are the keys every point of this metric
    carries values for, in this order."""
    return MetricDecl(name, MetricKind.COUNTER, unit, description, list(label_keys), [])


def gauge(name: str, unit: str, description: str, label_keys: Sequence[str]) -> MetricDecl:
    """A gauge: ``collect`` returns the current value."""
    return MetricDecl(name, MetricKind.GAUGE, unit, description, list(label_keys), [])


def histogram(name: str, unit: str, description: str, label_keys: Sequence[str],
              buckets: Sequence[float]) -> MetricDecl:
    """A histogram over ``buckets``: ascending, finite upper bounds
    (inclusive); an implicit last bucket holds everything above the last."""
    return MetricDecl(name, MetricKind.HISTOGRAM, unit, description, list(label_keys),
                      [float(b) for b in buckets])


def event(kind: str, fields: Sequence[Tuple[str, FieldType]]) -> EventDecl:
    """An event kind and the fields read from it, in the order in which a
    batch carries their columns."""
    return EventDecl(kind, [FieldDecl(name, ty) for name, ty in fields])


# --------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------

class StrColumn:
    """A string column of a :class:`Batch`, dictionary-encoded: each row
    refers to one of the batch's distinct values by its code.

    Iterating yields one ``Optional[str]`` per row. The dictionary is decoded
    once; an entry that is not valid UTF-8, or whose bounds are inconsistent,
    reads as missing, as does a code past the dictionary.
    """

    __slots__ = ("_len", "dict", "_codes")

    def __init__(self, length: int, raw: Optional[_types.StrColumn]) -> None:
        self._len = length
        #: The distinct values of the batch, indexed by code (``None``: an
        #: entry that could not be decoded).
        self.dict: List[Optional[str]] = []
        self._codes: Sequence[int] = ()
        if raw is None:
            return
        data = bytes(raw.dict_bytes)
        start = 0
        for end in raw.dict_ends:
            value: Optional[str] = None
            if start <= end <= len(data):
                try:
                    value = data[start:end].decode("utf-8")
                except UnicodeDecodeError:
                    value = None
            self.dict.append(value)
            start = end
        self._codes = raw.codes

    def __len__(self) -> int:
        return self._len

    def code(self, i: int) -> Optional[int]:
        """The dictionary code of row ``i``, or ``None`` if it lacks the
        field (or ``i`` is out of range)."""
        if not 0 <= i < self._len or i >= len(self._codes):
            return None
        c = self._codes[i]
        return c if c < len(self.dict) else None

    def get(self, i: int) -> Optional[str]:
        """The value of row ``i``, or ``None`` if it lacks the field."""
        c = self.code(i)
        return None if c is None else self.dict[c]

    def map_distinct(self, f: Callable[[Optional[str]], T]) -> List[T]:
        """``f`` of every row's value, calling ``f`` once per distinct value
        (and once for "missing") rather than once per row: the cheap way to
        classify a string column."""
        table = [f(v) for v in self.dict]
        none = f(None)
        n = len(table)
        codes = self._codes
        out = [table[c] if c < n else none for c in codes[: self._len]]
        if len(out) < self._len:
            out.extend([none] * (self._len - len(out)))
        return out

    def __iter__(self):
        return iter(self.map_distinct(lambda v: v))


class Batch:
    """A read-only view over an ``EventBatch`` received by ``on_events``.

    A batch holds ``len(batch)`` *rows*; row ``i`` stands for
    ``batch.weight(i)`` events that were identical over the fields this
    plugin declared (the host merges them). Count events with the weights,
    never with the rows. Column ``i`` is field ``i`` of the event kind's
    declared fields. Asking for a column with the wrong accessor, or past the
    end, never raises: every row reads as missing (``None``).
    """

    __slots__ = ("raw",)

    def __init__(self, raw: EventBatch) -> None:
        #: The underlying WIT record.
        self.raw = raw

    @property
    def kind(self) -> int:
        """Index of the batch's event kind in the ``events`` the plugin
        declared."""
        return self.raw.kind

    def __len__(self) -> int:
        return self.raw.len

    def weight(self, i: int) -> int:
        """How many events row ``i`` stands for: at least 1 for a row of the
        batch, 0 past its end."""
        if not 0 <= i < self.raw.len:
            return 0
        w = self.raw.weights
        return max(w[i], 1) if i < len(w) else 1

    def weights(self) -> List[int]:
        """The weight of every row, in order (a malformed 0 reads as 1)."""
        n = self.raw.len
        w = self.raw.weights
        if not w:
            return [1] * n
        out = [x if x > 0 else 1 for x in w[:n]]
        if len(out) < n:
            out.extend([1] * (n - len(out)))
        return out

    def events(self) -> int:
        """The number of events in the batch: the sum of the weights."""
        return sum(self.weights()) if self.raw.weights else self.raw.len

    def _numbers(self, col: int, variant: type) -> List[Any]:
        n = self.raw.len
        columns = self.raw.columns
        if not 0 <= col < len(columns) or not isinstance(columns[col].data, variant):
            return [None] * n
        c = columns[col]
        values: List[Any] = list(c.data.value[:n])
        if len(values) < n:
            values.extend([None] * (n - len(values)))
        for i in c.missing:
            if i < n:
                values[i] = None
        return values

    def int(self, col: int) -> List[Optional[int]]:
        """Column ``col`` as integers, one per row (``None`` where the row
        lacks the field, or the column is not an ``int`` column)."""
        return self._numbers(col, _types.ColumnData_Int)

    def float(self, col: int) -> List[Optional[float]]:
        """Column ``col`` as floats, one per row (``None`` where missing)."""
        return self._numbers(col, _types.ColumnData_Float)

    def str(self, col: int) -> StrColumn:
        """Column ``col`` as strings (every row missing if it is not a
        ``str`` column)."""
        columns = self.raw.columns
        if 0 <= col < len(columns) and isinstance(columns[col].data, _types.ColumnData_Str):
            return StrColumn(self.raw.len, columns[col].data.value)
        return StrColumn(self.raw.len, None)


# --------------------------------------------------------------------------
# Delta accumulators
# --------------------------------------------------------------------------

def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))


class _Series:
    """Series keyed by (metric, labels), drained in a deterministic order:
    by metric index, then by label values."""

    __slots__ = ("map",)

    def __init__(self) -> None:
        self.map: Dict[Tuple[int, Tuple[str, ...]], Any] = {}

    def __len__(self) -> int:
        return len(self.map)

    def drain(self, out: List[MetricPoint], value: Callable[[Any], Any]) -> None:
        items = sorted(self.map.items(), key=lambda kv: kv[0])
        self.map = {}
        for (metric, labels), v in items:
            out.append(MetricPoint(metric, list(labels), value(v)))


class Counters:
    """Counter increments per series since the last :meth:`drain`."""

    __slots__ = ("_series",)

    def __init__(self) -> None:
        self._series = _Series()

    def add(self, metric: int, labels: Sequence[str], delta: float) -> None:
        """Adds ``delta`` to counter ``metric`` (index into the declared
        metrics) with ``labels`` (values in its ``label_keys`` order). A
        negative, NaN or infinite delta is ignored; ``0`` creates the series."""
        delta = float(delta)
        if not (_finite(delta) and delta >= 0.0):
            return
        key = (metric, tuple(labels))
        m = self._series.map
        m[key] = m.get(key, 0.0) + delta

    def inc(self, metric: int, labels: Sequence[str]) -> None:
        """Adds 1 to a series."""
        self.add(metric, labels, 1.0)

    def __len__(self) -> int:
        return len(self._series)

    def is_empty(self) -> bool:
        """Whether nothing was added since the last drain."""
        return len(self._series) == 0

    def drain(self, out: List[MetricPoint]) -> None:
        """Appends one counter point per series added to since the last
        drain, then forgets them."""
        self._series.drain(out, _types.MetricValue_Counter)


class Gauges:
    """Current gauge values per series, set since the last :meth:`drain`."""

    __slots__ = ("_series",)

    def __init__(self) -> None:
        self._series = _Series()

    def set(self, metric: int, labels: Sequence[str], value: float) -> None:
        """Sets gauge ``metric`` with ``labels`` to ``value`` (non-finite
        values are ignored)."""
        value = float(value)
        if _finite(value):
            self._series.map[(metric, tuple(labels))] = value

    def __len__(self) -> int:
        return len(self._series)

    def is_empty(self) -> bool:
        """Whether nothing was set since the last drain."""
        return len(self._series) == 0

    def drain(self, out: List[MetricPoint]) -> None:
        """Appends one gauge point per series set since the last drain (its
        last value), then forgets them; the host keeps the last value."""
        self._series.drain(out, _types.MetricValue_Gauge)


class Histograms:
    """Histogram increments per series since the last :meth:`drain`.

    Each histogram metric is declared with its bucket bounds, from the
    plugin's info (:meth:`from_info`) or one by one (:meth:`declare`). A value
    ``v`` falls in the first bucket whose bound ``b`` has ``v <= b``, or in
    the overflow bucket past the last bound.
    """

    __slots__ = ("_bounds", "_series")

    def __init__(self) -> None:
        self._bounds: Dict[int, List[float]] = {}
        self._series = _Series()

    @classmethod
    def from_info(cls, info: PluginInfo) -> "Histograms":
        """Declares every histogram metric of ``info`` with its buckets."""
        h = cls()
        for i, m in enumerate(info.metrics):
            if m.kind == MetricKind.HISTOGRAM:
                h.declare(i, m.buckets)
        return h

    def declare(self, metric: int, bounds: Sequence[float]) -> None:
        """Declares histogram ``metric`` with ascending upper ``bounds``."""
        self._bounds[metric] = [float(b) for b in bounds]

    def bucket_of(self, metric: int, value: float) -> Optional[int]:
        """The bucket ``metric`` puts ``value`` in, or ``None`` if the metric
        is undeclared or the value not finite."""
        bounds = self._bounds.get(metric)
        if bounds is None or not _finite(value):
            return None
        return bisect_left(bounds, value)

    def observe(self, metric: int, labels: Sequence[str], value: float) -> None:
        """Records one observation (ignored if undeclared or non-finite)."""
        self.observe_n(metric, labels, value, 1)

    def observe_n(self, metric: int, labels: Sequence[str], value: float, n: int) -> None:
        """Records ``n`` observations of the same ``value``."""
        self.observe_weighted(metric, labels, ((value, n),))

    def observe_weighted(self, metric: int, labels: Sequence[str],
                         values: Iterable[Tuple[float, int]]) -> None:
        """Records every ``(value, n)`` of ``values`` in one series, finding
        it once; non-finite values and zero counts are skipped."""
        bounds = self._bounds.get(metric)
        if bounds is None:
            return
        key = (metric, tuple(labels))
        h = self._series.map.get(key)
        for value, n in values:
            value = float(value)
            if n <= 0 or not _finite(value):
                continue
            if h is None:
                h = [[0] * (len(bounds) + 1), 0, 0.0]
                self._series.map[key] = h
            h[0][bisect_left(bounds, value)] += n
            h[1] += n
            h[2] += value * n

    def __len__(self) -> int:
        return len(self._series)

    def is_empty(self) -> bool:
        """Whether nothing was observed since the last drain."""
        return len(self._series) == 0

    def drain(self, out: List[MetricPoint]) -> None:
        """Appends one histogram point per series observed since the last
        drain, then forgets them."""
        self._series.drain(
            out, lambda h: _types.MetricValue_Histogram(HistogramDelta(h[0], h[1], h[2])))


# --------------------------------------------------------------------------
# Host imports
# --------------------------------------------------------------------------

def log(level: Level, message: str) -> None:
    """Logs ``message`` under the plugin's name (rate-limited by the host:
    lines past the plugin's budget are dropped, long lines cut)."""
    _host.log(level, message)


def error(message: str) -> None:
    """Logs at ``Level.ERROR``."""
    _host.log(Level.ERROR, message)


def warn(message: str) -> None:
    """Logs at ``Level.WARN``."""
    _host.log(Level.WARN, message)


def info(message: str) -> None:
    """Logs at ``Level.INFO``."""
    _host.log(Level.INFO, message)


def debug(message: str) -> None:
    """Logs at ``Level.DEBUG``."""
    _host.log(Level.DEBUG, message)


def config(key: str) -> Optional[str]:
    """The value of ``key`` in the plugin's ``[plugin.config]`` table of the
    operator's manifest, if set."""
    return _host.config(key)


def parse_list(value: str) -> List[str]:
    """Splits ``value`` at commas, trims each item and drops empty ones."""
    return [s.strip() for s in value.split(",") if s.strip()]


def config_list(key: str) -> Optional[List[str]]:
    """The config value ``key`` as a comma-separated list; ``None`` if
    unset."""
    v = config(key)
    return None if v is None else parse_list(v)


# --------------------------------------------------------------------------
# The export
# --------------------------------------------------------------------------

def export(cls: type) -> type:
    """The class componentize-py exports for the collector ``cls``.

    ``cls`` has a static (or class) method ``info() -> PluginInfo``, and
    methods ``on_events(self, batch: Batch)`` and ``collect(self, out:
    list)`` that appends :class:`MetricPoint` s (usually by draining its
    accumulators). Its one instance is created (``cls()``, read
    configuration in ``__init__``) on the first ``on_events`` or ``collect``
    call and kept at module level, although componentize-py makes a new
    object of the exported class for every call. Bind the result to the name
    ``Collector`` in the plugin's module::

        Collector = export(MyCollector)
    """
    state: List[Any] = []

    def instance() -> Any:
        if not state:
            state.append(cls())
        return state[0]

    class Collector:
        def info(self) -> PluginInfo:
            return cls.info()

        def on_events(self, batch: EventBatch) -> None:
            instance().on_events(Batch(batch))

        def collect(self) -> List[MetricPoint]:
            out: List[MetricPoint] = []
            instance().collect(out)
            return out

    Collector.__name__ = Collector.__qualname__ = "Collector"
    Collector.__doc__ = f"componentize-py's export of {cls.__name__}."
    return Collector
