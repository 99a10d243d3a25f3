// The browser half of dashboard/stream_chart.py (the message format is described there).
// One module per page; each chart element keeps its state on its host element, and its plot div is made once.

const plotlyLoads = new Map(); // URL -> Promise<Plotly>: Plotly.js is fetched and run once per page

export function loadPlotly(src) {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyLoads.has(src)) {
    plotlyLoads.set(src, new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => {
        plotlyLoads.delete(src);
        reject(new Error(`stream_chart: could not load ${src}`));
      };
      document.head.appendChild(script);
    }));
  }
  return plotlyLoads.get(src);
}

// Same rule as thin_indices in stream_chart.py: every stride-th point of the whole series (stride a power of two
// leaving at most max / 2) and the last one.
export function thinIndices(n, max) {
  if (!max || n <= max) return Array.from({ length: n }, (_, i) => i);
  const target = Math.max(2, Math.floor(max / 2));
  let stride = 1;
  while (Math.floor((n - 1) / stride) + 2 > target) stride *= 2;
  const keep = [];
  for (let i = 0; i < n; i += stride) keep.push(i);
  if (keep[keep.length - 1] !== n - 1) keep.push(n - 1);
  return keep;
}

function nested(obj, path) {
  return path.split(".").reduce((node, name) => (node == null ? undefined : node[name]), obj);
}

// chart.source[i]: the position in the whole series of each point trace i shows; chart.total[i]: the series' length.
async function thin(Plotly, chart) {
  const gd = chart.gd;
  for (let i = 0; i < gd.data.length; i++) {
    const source = chart.source[i];
    if (!source || source.length <= chart.maxPoints) continue;
    const wanted = new Set(thinIndices(chart.total[i], chart.maxPoints));
    const positions = [];
    source.forEach((s, p) => { if (wanted.has(s)) positions.push(p); });
    const update = {};
    for (const path of chart.points[i] || []) {
      const values = nested(gd.data[i], path) || [];
      update[path] = [positions.map((p) => values[p])];
    }
    chart.source[i] = positions.map((p) => source[p]);
    await Plotly.restyle(gd, update, [i]);
    chart.stats.thinned += 1;
  }
}

// Appends each trace's new points; `at` (per trace, the series position of its first new point) lets a chart that
// already holds some of them (the live feed brought them) skip those. Returns the number of traces that grew, or
// null when the chart lacks points that come before the new ones (it must be drawn whole again).
async function extend(Plotly, chart, ext, at) {
  // One append per set of per-point arrays (usually one: x and y of every trace).
  const groups = new Map();
  for (const [index, given] of Object.entries(ext)) {
    const i = Number(index), paths = Object.keys(given).sort();
    const held = chart.total[i] || 0, start = at && at[index] != null ? at[index] : held;
    if (start > held) return null;
    const arrays = Object.fromEntries(paths.map((p) => [p, given[p].slice(held - start)]));
    const added = arrays[paths[0]].length;
    if (!added) continue;
    const signature = paths.join(",");
    if (!groups.has(signature)) {
      groups.set(signature, { update: Object.fromEntries(paths.map((p) => [p, []])), traces: [] });
    }
    const group = groups.get(signature);
    for (const path of paths) group.update[path].push(arrays[path]);
    group.traces.push(i);
    if (chart.maxPoints) for (let k = 0; k < added; k++) chart.source[i].push(held + k);
    chart.total[i] = held + added;
  }
  for (const group of groups.values()) {
    if (movable(chart.gd, group)) {
      const data = group.traces.map((i, k) => Object.fromEntries(Object.entries(group.update).map(
        ([path, added]) => [path, Array.from(chart.gd.data[i][path] || []).concat(added[k])])));
      await Plotly.animate(chart.gd, { data, traces: group.traces }, MOVE);
    } else {
      await Plotly.extendTraces(chart.gd, group.update, group.traces);
    }
  }
  if (chart.maxPoints) await thin(Plotly, chart);
  return groups.size;
}

// New points for scatter traces are drawn by Plotly.animate without a redraw: it moves those traces' paths and
// markers and leaves the axes, legend and the other traces alone. extendTraces replots the whole figure. Measured
// in headless Chromium on the Train page's two charts: 21 ms of CPU per update against 36 ms. The axes stay as they
// are, which is what the live charts want: their ranges come from the server as layout changes (Plotly.react).
const MOVE = { transition: { duration: 0 }, frame: { duration: 0, redraw: false }, mode: "immediate" };

function movable(gd, group) {
  return group.traces.every((i) => (gd.data[i].type || "scatter") === "scatter")
    && Object.keys(group.update).every((path) => !path.includes("."));
}

// Plotly's `responsive` follows the window; a column can change width without it (the sidebar opens).
function keepWidth(Plotly, chart) {
  let width = chart.gd.clientWidth;
  chart.resizer = new ResizeObserver(() => {
    const now = chart.gd.clientWidth;
    if (now === width || !now) return;
    width = now;
    chart.chain = chart.chain.then(() => Plotly.Plots.resize(chart.gd)).catch(() => {});
  });
  chart.resizer.observe(chart.gd);
}

// False when the chart lacks points that come before the change's (it must be drawn whole again).
async function applyChange(Plotly, chart, change) {
  if (change.extend) {
    const grew = await extend(Plotly, chart, change.extend, change.at);
    if (grew === null) return false;
    if (grew) chart.stats.extends += 1;
  }
  if (change.layout) {
    chart.layout = Object.assign({}, chart.layout, change.layout);
    for (const name of change.layout_drop || []) delete chart.layout[name];
    await Plotly.react(chart.gd, chart.gd.data, chart.layout, chart.config);
    chart.stats.layouts += 1;
  }
  return true;
}

async function apply(chart, d, setTriggerValue) {
  // versions count per series and per server-side tracker (t): another of either is not comparable
  const same = chart.v !== null && chart.series === d.series && chart.tracker === d.t;
  if (same && chart.v >= d.v) return; // a message already applied, handed over again
  if (d.reset) {
    const Plotly = await loadPlotly(d.plotly);
    chart.points = d.points || [];
    chart.maxPoints = d.max_points || 0;
    chart.total = (d.counts || []).slice();
    chart.source = chart.total.map((n) => thinIndices(n, chart.maxPoints));
    chart.config = Object.assign({ responsive: true }, d.config || {});
    chart.layout = d.reset.layout; // the figure's layout as sent: the user's zoom lives in gd.layout (uirevision)
    await Plotly.react(chart.gd, d.reset.data, chart.layout, chart.config);
    if (!chart.resizer) keepWidth(Plotly, chart);
    chart.series = d.series;
    chart.tracker = d.t;
    chart.v = d.v;
    chart.asked = null;
    chart.stats.pending = false;
    chart.stats.resets += 1;
    return;
  }
  if (same && chart.v >= d.since) {
    const Plotly = window.Plotly;
    let applied = 0;
    for (const [version, change] of d.chunks || []) {
      if (version <= chart.v) continue;
      if (!(await applyChange(Plotly, chart, change))) return askWhole(chart, d, setTriggerValue);
      chart.v = version;
      applied += 1;
    }
    if (applied > 1) chart.stats.caughtUp += 1; // messages Streamlit did not hand over, made up from the window
    chart.v = d.v;
    chart.asked = null; // whole again: a request still open is moot (its answer, if it comes, redraws the same)
    chart.stats.pending = false;
    return;
  }
  askWhole(chart, d, setTriggerValue);
}

// This element lacks what came before (it is new, or it missed more than the window): ask for the whole figure,
// once until it comes (again after 3 s, in case that request was lost).
function askWhole(chart, d, setTriggerValue) {
  const now = performance.now();
  if (chart.asked !== null && now - chart.asked < 3000) return;
  ask(chart, d, setTriggerValue, now);
}

// The live feed's way in (live_feed.js): points to append to the chart drawn in `gd` ({"extend", "at"}, as in a
// chunk), between script runs, queued behind the chart's own messages. A chart that lacks earlier points asks for
// the whole figure; one not drawn yet ignores them (its first message brings everything).
export function appendPoints(gd, change) {
  const chart = gd && gd.__chart;
  if (!chart || chart.v === null || !window.Plotly) return;
  chart.chain = chart.chain
    .then(async () => {
      if (!(await applyChange(window.Plotly, chart, change)) && chart.last) askWhole(chart, ...chart.last);
    })
    .catch((error) => console.error("stream_chart:", error));
}

// A request can be lost (seen on a page slowed 10x: the trigger's rerun never came), and a run that has ended sends
// nothing new to notice it by: until an answer or a whole message comes, ask again every 3 s.
function ask(chart, d, setTriggerValue, now) {
  chart.asked = now;
  chart.stats.asked += 1;
  chart.stats.pending = true;
  setTriggerValue("reset", { series: d.series, have: chart.v, seen: d.v, n: chart.stats.asked });
  setTimeout(() => {
    if (chart.asked === now && !chart.unmounted) ask(chart, d, setTriggerValue, performance.now());
  }, 3000);
}

export function render({ data, setTriggerValue, parentElement }) {
  if (!data) return;
  let chart = parentElement.__streamChart;
  if (!chart) {
    const gd = document.createElement("div");
    gd.className = "stream-chart";
    gd.style.width = "100%";
    const height = data.reset && data.reset.layout && data.reset.layout.height;
    if (height) gd.style.minHeight = `${height}px`; // the space is there before Plotly.js has loaded
    parentElement.appendChild(gd);
    chart = {
      gd, series: null, tracker: null, v: null, asked: null, points: [], maxPoints: 0, total: [], source: [],
      config: {}, layout: {}, resizer: null, unmounted: false,
      chain: Promise.resolve(),
      stats: { resets: 0, extends: 0, layouts: 0, asked: 0, thinned: 0, caughtUp: 0, unmounts: 0, pending: false },
    };
    gd.__streamChart = chart.stats; // for tests and debugging: what this element has done
    gd.__chart = chart; // for appendPoints
    parentElement.__streamChart = chart;
  }
  chart.unmounted = false;
  chart.last = [data, setTriggerValue];
  // Messages are applied one after another, in the order they came.
  chart.chain = chart.chain
    .then(() => apply(chart, data, setTriggerValue))
    .catch((error) => console.error("stream_chart:", error));
}

// Streamlit calls this when the element leaves the page, and also (seen on a page too busy to keep up) just before
// it mounts the element again on the same host. So the chart is only freed if it was not mounted again within a few
// seconds, or its host has left the page; until then a new mount carries on with the same plot.
export function unmount(parentElement) {
  const chart = parentElement.__streamChart;
  if (!chart) return;
  chart.unmounted = true;
  chart.stats.unmounts += 1;
  setTimeout(() => {
    if (!chart.unmounted && parentElement.isConnected) return;
    if (parentElement.__streamChart === chart) delete parentElement.__streamChart;
    if (chart.resizer) chart.resizer.disconnect();
    chart.chain = chart.chain.then(() => {
      if (window.Plotly) window.Plotly.purge(chart.gd);
      chart.gd.remove();
    });
  }, 5000);
}
