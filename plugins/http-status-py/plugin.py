"""``http-status`` in Python: counts HTTP requests per method and status class.

The same plugin as ``plugins/http-status`` (Rust), built with componentize-py:
it reads the ``method`` (str) and ``status`` (int) fields of ``http.request``
events and reports one counter, ``http.requests``, labelled by ``method``
(``GET HEAD POST PUT DELETE PATCH OPTIONS CONNECT TRACE``, matched exactly, or
``OTHER``) and ``status_class`` (``1xx`` to ``5xx``, or ``other``).
"""

from sonde_sdk import Batch, Counters, FieldType, PluginInfo, counter, event, export

#: Methods reported by name, in label order; anything else is ``OTHER``.
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
#: ``status_class`` labels; the last one is for statuses outside 100..=599.
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
LABELS = METHODS + ("OTHER",)

#: Field columns, in the declared order.
METHOD, STATUS = 0, 1
#: Metric index of ``http.requests``.
REQUESTS = 0


def method_index(method):
    """The ``method`` label index of a request method (``OTHER`` if unknown)."""
    try:
        return METHODS.index(method)
    except ValueError:
        return len(METHODS)


def class_index(status):
    """The ``status_class`` label index of a status code."""
    if status is not None and 100 <= status <= 599:
        return status // 100 - 1
    return len(CLASSES) - 1


class HttpStatus:
    """The collector's state: increments since the last ``collect``."""

    def __init__(self) -> None:
        self.counters = Counters()

    @staticmethod
    def info() -> PluginInfo:
        return PluginInfo(
            name="http-status",
            version="0.1.0-python",
            description="HTTP requests per method and status class (1xx..5xx, other).",
            events=[event("http.request", [("method", FieldType.STR), ("status", FieldType.INT)])],
            metrics=[counter("http.requests", "1", "HTTP requests, by method and status class.",
                             ["method", "status_class"])],
        )

    def on_events(self, batch: Batch) -> None:
        # Tally the batch per (method, class), classifying each distinct
        # method string once; each row stands for its weight in requests.
        tally = {}
        methods = batch.str(METHOD).map_distinct(method_index)
        for m, status, n in zip(methods, batch.int(STATUS), batch.weights()):
            key = (m, class_index(status))
            tally[key] = tally.get(key, 0) + n
        for (m, c), n in tally.items():
            self.counters.add(REQUESTS, (LABELS[m], CLASSES[c]), n)

    def collect(self, out: list) -> None:
        self.counters.drain(out)


Collector = export(HttpStatus)
