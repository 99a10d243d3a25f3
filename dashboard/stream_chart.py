"""A Plotly chart that streams: the browser keeps one chart element for a whole run and only new points travel.

`st.plotly_chart` derives its element id from the whole figure, so every new epoch resends the figure and rebuilds
the chart (flicker; zoom, hover and legend clicks lost). `stream_chart` draws through a keyed components-v2 element
instead. Figures are still built by the pure chart modules (charts.py, compare_charts.py, ...); per chart element
the session keeps a `SeriesTracker` that knows what was sent, and each script run sends one message:

  {"js", "series", "t", "v", "reset": {data, layout}, "points", "counts", "plotly", ...}
      the whole figure: first draw, new session (a fresh page or a reload), new series id, a trace that changed
      other than by appending, or the browser's request
  {"js", "series", "t", "v", "since", "chunks": [[version, {"extend": {trace: {path: [...]}}, "at": {trace: n},
                                                       "layout": {...}, "layout_drop": [...]}], ...]}
      the last few changes with their versions: points appended per trace (`at`: the position in the series of the
      first one), and (rarely) the top-level layout parts that changed. An unchanged figure sends the same message
      again. A browser skips the points it already holds: the live feed (live_feed.py) appends points between
      script runs, and the next message may bring some of them again.

The browser applies the chunks newer than the version it holds, provided it holds at least `since`: Streamlit hands
a component only the newest data when several messages arrive while the page is busy, and the window covers that.
A browser further behind, or with nothing (a new element for a page shown again in the same session), asks for the
whole figure with a trigger, which resets the tracker. A fresh page or a reload is a new session, so its first
message is always a reset.

In the browser (stream_chart_js/stream_chart.js): Plotly.js comes from the installed plotly package
(plotly/package_data/plotly.min.js), served by this Streamlit server, never a CDN. Points are appended with
`Plotly.extendTraces`, a layout change goes through `Plotly.react` on the same element, and the layout's
`uirevision` keeps the user's zoom, pan and legend clicks (a new series id starts a new uirevision: a new run
starts unzoomed). The chart's div is created once per element and never replaced, also when Streamlit unmounts the
element and mounts it again on the same host (seen on a page too busy to keep up).

Decimation: with `max_points`, a trace that grows past it is cut to every stride-th point of its whole series
(stride a power of two, leaving at most max_points // 2) plus its last point (`thin_indices`); new points then
arrive at full resolution until the bound is passed again. The browser applies the rule, and a reset is thinned the
same way before it is sent. A long per-batch series stays between max_points / 4 and max_points points, evenly
spread over the whole run, while Python keeps sending every new point once.

The JavaScript is served as files, not inlined: a components-v2 element carries its inline `js` in every message,
so the element's own code is a 0.4 kB loader and the module and Plotly.js are fetched once per page over HTTP.
Streamlit 1.67 only serves files for components declared with a path (components v1's `declare_component`, never
mounted here) or for installed packages with a manifest; the former is used for the two static files.
"""
from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# -- pure delta logic (no Streamlit) --------------------------------------------------------------------------------
EXTENDABLE_TYPES = frozenset({"scatter", "scattergl", "bar"})  # traces whose points are per-point arrays


def figure_dict(figure: Any) -> dict:
    """A plotly Figure or a {"data", "layout"} mapping -> plain JSON types (NaN and infinities become null)."""
    if hasattr(figure, "to_plotly_json"):
        import plotly.io as pio

        return json.loads(pio.to_json(figure, validate=False))
    data = [dict(t) for t in figure.get("data", [])]
    layout = dict(figure.get("layout", {}))
    return json.loads(json.dumps({"data": data, "layout": layout}, default=_plain), parse_constant=lambda _: None)


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars, pandas series
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def finite(value: Any) -> Any:
    """`value` with every NaN or infinity (in lists and dicts too) made None: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [finite(v) for v in value]
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    return value


def _digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def split_trace(trace: Mapping) -> tuple[int, dict[str, list], dict]:
    """(points, {path: per-point array}, style) of one trace.

    A trace's points are its `x` (or `y`) array; every array in it of that length (`y`, `customdata`, `text`,
    `marker.color`, `marker.pattern.shape`, ...) is a per-point array, named by its dotted path, which appending
    extends. The rest is its style, which must stay put while the trace streams (a legend name that counts the
    points would redraw the figure on every update). A trace of another type (a heatmap) has no points: all of it is
    style, so any change to it redraws the figure.
    """
    if trace.get("type", "scatter") not in EXTENDABLE_TYPES:
        return 0, {}, dict(trace)
    axis = trace.get("x") if isinstance(trace.get("x"), list) else trace.get("y")
    if not isinstance(axis, list):
        return 0, {}, dict(trace)
    n = len(axis)
    arrays: dict[str, list] = {}

    def walk(node: Mapping, prefix: str) -> dict:
        style = {}
        for name, value in node.items():
            path = prefix + name
            if isinstance(value, list) and len(value) == n:
                arrays[path] = value
            elif isinstance(value, Mapping):
                style[name] = walk(value, path + ".")
            else:
                style[name] = value
        return style

    style = walk(trace, "")
    return n, arrays, style


def thin_indices(n: int, max_points: int | None) -> list[int]:
    """Which of a trace's first n points (by position in the source series) it keeps under a bound of max_points.

    Beyond the bound a trace keeps every stride-th point and its last one, the stride being the smallest power of
    two that leaves at most max_points // 2. The browser applies the same rule whenever appends take a trace past
    the bound: as strides double, each thinning keeps a subset of what the last one kept, the whole run stays
    evenly covered (its start included), and the points since the last thinning are all there.
    """
    if not max_points or n <= max_points:
        return list(range(n))
    target = max(2, max_points // 2)
    stride = 1
    while (n - 1) // stride + 2 > target:  # the multiples of stride below n, and the last point
        stride *= 2
    keep = list(range(0, n, stride))
    if keep[-1] != n - 1:
        keep.append(n - 1)
    return keep


def _take(trace: dict, arrays: dict[str, list], keep: list[int]) -> dict:
    """A copy of trace with each per-point array cut down to the points `keep`."""
    trace = json.loads(json.dumps(trace))
    for path, values in arrays.items():
        node = trace
        *parents, leaf = path.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = [values[i] for i in keep]
    return trace


class SeriesTracker:
    """What one browser chart element has been sent, and the next message for it.

    `series` names what is drawn (a run id): a new one redraws from scratch. `version` counts the changes sent
    since the page began. Each message carries the last few changes (`window` versions, at most `window_points`
    points) with their versions, so a browser that skipped some messages (Streamlit hands a component only the
    newest data when several arrive while the page is busy) catches up from any version since `since`; one that is
    further behind, or has nothing (a new element), asks for a reset (`forget`). Traces are compared by their
    style, their per-point arrays' names and the last point sent: any change other than appending redraws the
    figure. An unchanged figure gives the same message again (Streamlit then has nothing new to hand over).
    """

    def __init__(self, max_points: int | None = None, window: int = 6, window_points: int = 400):
        self.max_points = max_points
        self.window, self.window_points = window, window_points
        self.series: str | None = None
        self.version = 0
        self.counts: list[int] | None = None  # per trace: points sent (of the source series, before thinning)
        self._styles: list[str] = []
        self._paths: list[tuple[str, ...]] = []
        self._last: list[str | None] = []  # per trace: digest of the last point sent
        self._layout: dict[str, str] = {}  # per top-level layout key: digest of what was sent
        self._chunks: list[tuple[int, dict, int]] = []  # (version, change, points) since the reset, newest last
        self.resets = 0
        self.token = uuid.uuid4().hex[:8]  # versions count per tracker: a new one (state cleared) is told apart
        self.figure: dict | None = None  # the last figure given, as the browser draws it (for tests and logs)

    def forget(self) -> None:
        """The browser holds nothing (a new element, or messages it missed): the next message is a reset."""
        self.counts = None

    def update(self, figure: Mapping, series: str | None = None) -> dict:
        """The message that brings the browser from what it has to `figure` (a figure_dict)."""
        series = "" if series is None else str(series)
        data = [finite(t) for t in figure.get("data", [])]
        layout = finite(dict(figure.get("layout", {})))
        if "uirevision" in layout or series:  # a new series forgets the user's zoom; updates of one keep it
            layout["uirevision"] = f"{layout.get('uirevision', '')}|{series}"
        self.figure = {"data": data, "layout": layout}
        split = [split_trace(t) for t in data]
        styles = [_digest(style) for _, _, style in split]
        paths = [tuple(sorted(arrays)) for _, arrays, _ in split]
        layout_digest = {name: _digest(value) for name, value in layout.items()}
        if not self._appends_to(series, split, styles, paths):
            return self._reset(series, data, layout, split, styles, paths, layout_digest)

        change: dict[str, Any] = {}
        points = 0
        for i, (n, arrays, _) in enumerate(split):
            sent = self.counts[i]
            if n > sent:
                change.setdefault("extend", {})[str(i)] = {path: values[sent:] for path, values in arrays.items()}
                change.setdefault("at", {})[str(i)] = sent
                points += n - sent
                self.counts[i] = n
                self._last[i] = _point_digest(arrays, n - 1)
        if layout_digest != self._layout:  # only the top-level parts that changed (a title, an axis)
            change["layout"] = {k: v for k, v in layout.items() if self._layout.get(k) != layout_digest[k]}
            dropped = sorted(set(self._layout) - set(layout_digest))
            if dropped:
                change["layout_drop"] = dropped
            self._layout = layout_digest
        if change:
            self.version += 1
            self._chunks.append((self.version, change, points))
            while len(self._chunks) > 1 and (len(self._chunks) > self.window
                                             or sum(p for _, _, p in self._chunks) > self.window_points):
                self._chunks.pop(0)
        since = self._chunks[0][0] - 1 if self._chunks else self.version
        return {"series": series, "t": self.token, "v": self.version, "since": since,
                "chunks": [[version, change] for version, change, _ in self._chunks]}

    def _appends_to(self, series: str, split, styles, paths) -> bool:
        """Whether `split` is what the browser has with points appended (and so can be sent as a delta)."""
        if self.counts is None or series != self.series or len(split) != len(self.counts):
            return False
        if styles != self._styles or paths != self._paths:
            return False
        for (n, arrays, _), sent, last in zip(split, self.counts, self._last):
            if n < sent or (sent and _point_digest(arrays, sent - 1) != last):
                return False
        return True

    def _reset(self, series, data, layout, split, styles, paths, layout_digest) -> dict:
        self.series, self._styles, self._paths, self._layout = series, styles, paths, layout_digest
        self.counts = [n for n, _, _ in split]
        self._last = [_point_digest(arrays, n - 1) if n else None for n, arrays, _ in split]
        sent = [_take(trace, arrays, thin_indices(n, self.max_points)) if self.max_points and n > self.max_points
                else trace for trace, (n, arrays, _) in zip(data, split)]
        self.version += 1
        self._chunks = []
        self.resets += 1
        return {"series": series, "t": self.token, "v": self.version, "reset": {"data": sent, "layout": layout},
                "points": [list(p) for p in paths], "counts": list(self.counts), "max_points": self.max_points}


def _point_digest(arrays: Mapping[str, list], index: int) -> str:
    return _digest([arrays[path][index] for path in sorted(arrays)])


def point_counts(message: Mapping) -> dict[int, int]:
    """Per trace, the points a message carries (a reset's, or all its chunks' together); for tests and logs."""
    if "reset" in message:
        return {i: _trace_points(t) for i, t in enumerate(message["reset"]["data"])}
    counts: dict[int, int] = {}
    for _, change in message.get("chunks", []):
        for i, arrays in change.get("extend", {}).items():
            counts[int(i)] = counts.get(int(i), 0) + len(next(iter(arrays.values()), []))
    return counts


def _trace_points(trace: Mapping) -> int:
    n, _, _ = split_trace(trace)
    return n


# -- Streamlit ------------------------------------------------------------------------------------------------------
JS_DIR = Path(__file__).with_name("stream_chart_js")

# The element's own code: every message carries it, so it only loads the module (once per page) and hands over.
_LOADER_JS = """
export default function (args) {
  const src = args.data && args.data.js;
  if (!src) return;
  const load = window.__streamChartLoad = window.__streamChartLoad || import(new URL(src, document.baseURI).href);
  load.then((m) => m.render(args), (e) => console.error("stream_chart:", e));
  return () => load.then((m) => m.unmount(args.parentElement));
}
"""


def _plotly_dir() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data"


def _file_version(*paths: Path) -> str:
    stats = [path.stat() for path in paths]
    return f"{sum(s.st_size for s in stats):x}{int(max(s.st_mtime for s in stats)):x}"


def base_path() -> str:
    """The server's URL path prefix ('' or '/prefix'), from server.baseUrlPath."""
    from streamlit import config

    base = "/".join(p for p in (config.get_option("server.baseUrlPath") or "").split("/") if p)
    return f"/{base}" if base else ""


def module_url(name: str) -> str:
    """The URL of a module in stream_chart_js/ on this server. One version for the whole folder, so modules that
    import each other (live_feed.js imports stream_chart.js with its own query) load each one once."""
    import streamlit.components.v1 as components

    module = components.declare_component("stream_chart_js", path=str(JS_DIR))  # idempotent; registers the files
    return f"{base_path()}/component/{module.name}/{name}?v={_file_version(*sorted(JS_DIR.glob('*.js')))}"


def plotly_url() -> str:
    """Plotly.js from the installed plotly package, on this server."""
    import streamlit.components.v1 as components

    plotly_js = components.declare_component("plotly_js", path=str(_plotly_dir()))
    return f"{base_path()}/component/{plotly_js.name}/plotly.min.js?v={_file_version(_plotly_dir() / 'plotly.min.js')}"


def _served_urls() -> tuple[str, str]:
    """(module URL, Plotly.js URL) on this server; declaring is idempotent and registers on the active runtime."""
    return module_url("stream_chart.js"), plotly_url()


_component = None


def _mount():
    global _component
    if _component is None:
        import streamlit as st

        _component = st.components.v2.component("mlp_stream_chart", js=_LOADER_JS, isolate_styles=False)
    return _component


def drawn_figure(session_state: Mapping, key: str) -> dict | None:
    """The figure the chart element `key` was last given in this session ({"data", "layout"}), e.g. for AppTests:
    `drawn_figure(at.session_state, "live_loss")["data"]` where a test of st.plotly_chart read the element's spec."""
    try:
        tracker = session_state[f"_stream_chart:{key}"]
    except KeyError:
        return None
    return tracker.figure if isinstance(tracker, SeriesTracker) else None


def stream_chart(figure: Any, *, key: str, series: str | None = None, config: Mapping | None = None,
                 max_points: int | None = None) -> dict:
    """Draw `figure` (a plotly Figure or {"data", "layout"}) in a chart element that updates in place.

    key: the element's identity (one per chart on a page). series: what is drawn, e.g. the run id; a new one
    redraws the chart from scratch. config: Plotly's config (charts.CONFIG). max_points: thin each trace in the
    browser beyond this many points (see `thin_indices`). Returns the message sent (for logs and tests).
    """
    import streamlit as st

    state_key = f"_stream_chart:{key}"
    tracker = st.session_state.get(state_key)  # one per element and session: a new session starts with a reset
    if not isinstance(tracker, SeriesTracker) or tracker.max_points != max_points:
        tracker = st.session_state[state_key] = SeriesTracker(max_points)
    message = tracker.update(figure_dict(figure), series)
    module_url, plotly_url = _served_urls()
    data = {"js": module_url, **message}
    if "reset" in message:
        data.update(plotly=plotly_url, config=dict(config or {}))

    def forget() -> None:  # the element holds less than the tracker thinks: the next run sends everything
        held = st.session_state.get(state_key)
        if isinstance(held, SeriesTracker):
            held.forget()

    _mount()(key=key, data=data, on_reset_change=forget)
    return data
