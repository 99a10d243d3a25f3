// The browser half of dashboard/live_feed.py: while a run is active, ask the server's live route what is new and put
// it in place on the Train page (progress bar, tiles, system strip, charts) with no Streamlit rerun; trigger one
// fragment rerun when the route says only a redraw can show the run. Never while the tab is hidden.

// The same module (and the same chart state) as the chart elements': same folder, same version query.
const charts = import(new URL(`./stream_chart.js${new URL(import.meta.url).search}`, import.meta.url).href);
const RERUN_RETRY_MS = 3000; // a trigger whose rerun never came is sent again

const stats = (window.__liveFeed = window.__liveFeed || { answers: 0, updates: 0, reruns: 0, failures: 0, mismatches: 0 });

// Replaces the text of `el`'s text nodes one for one (never the markup, which React owns); false if they differ in
// number from what the server rendered.
function setTexts(el, texts) {
  if (!el || !texts) return false;
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  const nodes = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) if (n.nodeValue) nodes.push(n);
  if (nodes.length !== texts.length) {
    stats.mismatches += 1;
    stats.lastMismatch = [el.getAttribute("data-testid"), nodes.map((n) => n.nodeValue), texts];
    return false;
  }
  nodes.forEach((n, i) => { if (n.nodeValue !== texts[i]) n.nodeValue = texts[i]; });
  return true;
}

function showProgress(progress) {
  const box = document.querySelector(".st-key-live_progress [data-testid='stProgress']");
  if (!box || !progress) return;
  const bar = box.querySelector("[role='progressbar']");
  const percent = Math.round(progress.fraction * 100);
  if (bar) {
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-valuetext", `${percent}%`);
    const fill = bar.querySelector("[data-testid='stProgressBarTrack'] > div");
    if (fill) fill.style.transform = `translateX(${percent - 100}%)`;
  }
  setTexts(box.querySelector("[data-testid='stMarkdownContainer']"), progress.text);
}

// A delta's arrow and colours as Streamlit drew them for each sign (learnt from the deltas it draws): a delta whose
// sign changed between redraws takes the other sign's, or turns its arrow and goes neutral until one is seen.
const deltaLooks = {};

function showDelta(delta, tile) {
  if (!delta || !tile.delta) return;
  const arrow = delta.querySelector("svg");
  const drawnUp = !arrow || (arrow.getAttribute("data-testid") || "").endsWith("Up");
  if (!delta.style.color) {
    const style = getComputedStyle(delta);
    deltaLooks[drawnUp] = { color: style.color, background: style.backgroundColor };
  }
  if (!setTexts(delta, tile.delta)) return;
  const flip = drawnUp !== tile.up, look = flip ? deltaLooks[tile.up] : null;
  delta.style.color = flip ? (look ? look.color : "inherit") : "";
  delta.style.backgroundColor = flip ? (look ? look.background : "transparent") : "";
  if (arrow) arrow.style.transform = flip ? "rotate(180deg)" : "";
}

function showTiles(tiles) {
  if (!tiles) return;
  const boxes = document.querySelectorAll(".st-key-live_tiles [data-testid='stMetric']");
  tiles.forEach((tile, i) => {
    const box = boxes[i];
    if (!box) return;
    setTexts(box.querySelector("[data-testid='stMetricValue']"), tile.value);
    showDelta(box.querySelector("[data-testid='stMetricDelta']"), tile);
  });
}

function showStrip(strip) {
  if (!strip) return;
  const captions = document.querySelectorAll(".st-key-system_strip [data-testid='stCaptionContainer']");
  strip.forEach((texts, i) => setTexts(captions[i] && captions[i].querySelector("p"), texts));
}

// The run's learning warnings, drawn by this element (they can change at every epoch), as plain text in boxes that
// look like st.warning's.
function showWarnings(host, warnings) {
  if (!host || !warnings) return;
  const key = JSON.stringify(warnings);
  if (host.__warnings === key) return;
  host.__warnings = key;
  let box = host.querySelector(":scope > .live-warnings");
  if (!box) {
    box = document.createElement("div");
    box.className = "live-warnings";
    host.appendChild(box);
  }
  box.replaceChildren(...warnings.map((text) => {
    const div = document.createElement("div");
    div.setAttribute("role", "alert");
    div.textContent = text;
    Object.assign(div.style, { background: "rgba(255, 189, 69, 0.2)", color: "rgb(146, 108, 5)", padding: "16px",
      borderRadius: "0.5rem", marginTop: "0.5rem", fontSize: "1rem", lineHeight: "1.6" });
    return div;
  }));
}

async function show(d, host) {
  showWarnings(host, d.warnings);
  showProgress(d.progress);
  showTiles(d.tiles);
  showStrip(d.strip);
  const { appendPoints } = await charts;
  for (const [key, change] of Object.entries(d.charts || {})) {
    appendPoints(document.querySelector(`.st-key-${key} .stream-chart`), change);
  }
  stats.updates += 1;
}

function askRerun(feed) {
  const now = performance.now();
  if (feed.rerunAsked !== null && now - feed.rerunAsked < RERUN_RETRY_MS) return;
  feed.rerunAsked = now;
  stats.reruns += 1;
  feed.setTriggerValue("changed", stats.reruns);
  clearTimeout(feed.rerunTimer);
  feed.rerunTimer = setTimeout(() => askRerun(feed), RERUN_RETRY_MS); // until a redraw brings new data
}

function schedule(feed, seconds) {
  clearTimeout(feed.timer);
  feed.timer = setTimeout(() => poll(feed), seconds * 1000);
}

async function poll(feed) {
  feed.timer = null;
  const data = feed.data;
  if (!data.active || feed.busy || document.visibilityState !== "visible") return;
  const generation = feed.generation;
  feed.busy = true;
  let next = data.gap;
  try {
    const c = feed.cursor;
    const query = new URLSearchParams({ e: c.e, b: c.b, shape: data.shape });
    if (c.bx !== null && c.bx !== undefined) query.set("bx", String(c.bx));
    const response = await fetch(`${data.url}?${query}`, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(`live feed: HTTP ${response.status}`);
    const d = await response.json();
    if (generation !== feed.generation) return; // the panel was redrawn meanwhile: its data rules
    stats.answers += 1;
    if (d.rerun) askRerun(feed);
    if (!d.cursor) { // nothing this page can take: only the redraw can show the run
      next = null;
      return;
    }
    feed.cursor = d.cursor;
    if (!d.active) next = null; // the run has ended: the redraw asked for above shows the rest
    await show(d, feed.host);
  } catch (error) {
    if (generation !== feed.generation) return;
    // No live route on this server, or it failed: redraw the panel instead, as the fragment's poll did.
    stats.failures += 1;
    next = null;
    clearTimeout(feed.rerunTimer);
    feed.rerunTimer = setTimeout(() => askRerun(feed), data.fallback * 1000);
  } finally {
    feed.busy = false;
    if (next !== null && generation === feed.generation) schedule(feed, next);
  }
}

export function render({ data, setTriggerValue, parentElement }) {
  if (!data) return;
  let feed = parentElement.__liveFeed;
  if (!feed) {
    feed = { timer: null, rerunTimer: null, busy: false, generation: 0, rerunAsked: null };
    feed.onVisibility = () => { // hidden: nothing is asked; shown again: at once
      if (document.visibilityState === "visible" && feed.timer === null) poll(feed);
    };
    document.addEventListener("visibilitychange", feed.onVisibility);
    parentElement.__liveFeed = feed;
  }
  // Each redraw of the panel brings what the page now shows: start from there.
  feed.generation += 1;
  feed.host = parentElement;
  showWarnings(parentElement, data.warnings);
  feed.data = data;
  feed.cursor = data.cursor;
  feed.setTriggerValue = setTriggerValue;
  feed.rerunAsked = null;
  feed.busy = false;
  clearTimeout(feed.timer);
  clearTimeout(feed.rerunTimer);
  feed.timer = null;
  if (data.active) schedule(feed, 0);
  // The run has its device: the charts come within a second or two, and Plotly.js takes about as long to load.
  if (data.plotly) charts.then((m) => m.loadPlotly(data.plotly)).catch(() => {});
}

export function unmount(parentElement) {
  const feed = parentElement.__liveFeed;
  if (!feed) return;
  clearTimeout(feed.timer);
  clearTimeout(feed.rerunTimer);
  feed.generation += 1;
  feed.data = Object.assign({}, feed.data, { active: false });
  document.removeEventListener("visibilitychange", feed.onVisibility);
  delete parentElement.__liveFeed;
}
