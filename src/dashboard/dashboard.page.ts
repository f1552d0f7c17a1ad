/**
 * The dashboard's one page: plain HTML, inline CSS and a small inline script that draws line
 * charts on canvases from the server-sent events at `<page>/events`. No framework, no CDN, no
 * build step; it reads the events URL from its own location, so a global prefix or a proxy
 * path in front of it needs no setting.
 */
export function renderDashboardPage(opts: { interval: number }): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Redis</title>
<style>
  :root { color-scheme: light dark; --fg: #1d2330; --muted: #6b7385; --bg: #f6f7fa; --card: #fff; --line: #e3e6ee; }
  @media (prefers-color-scheme: dark) { :root { --fg: #e6e8ee; --muted: #9aa1b2; --bg: #15181f; --card: #1d2129; --line: #2c313c; } }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
  header { display: flex; gap: 16px; align-items: baseline; padding: 12px 20px; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 18px; margin: 0; }
  #status { color: var(--muted); }
  #status.down { color: #d33; }
  main { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 14px; padding: 16px 20px; }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
  section h2 { font-size: 13px; font-weight: 600; margin: 0 0 4px; display: flex; justify-content: space-between; }
  section h2 span { font-weight: 400; color: var(--muted); }
  canvas { width: 100%; height: 120px; display: block; }
  .legend { font-size: 12px; color: var(--muted); }
  .legend i { display: inline-block; width: 10px; height: 3px; margin: 0 4px 2px 8px; vertical-align: middle; }
  table { width: 100%; border-collapse: collapse; font-size: 12px; }
  td, th { text-align: left; padding: 3px 4px; border-bottom: 1px solid var(--line); }
  .wide { grid-column: 1 / -1; }
  #errors { color: #d33; font-size: 12px; }
</style>
</head>
<body data-samples="0">
<header><h1>Redis</h1><span id="status">connecting…</span><span id="errors"></span></header>
<main>
  <section><h2>Command latency <span id="v-latency"></span></h2><canvas data-chart="latency"></canvas><div class="legend" data-legend="latency"></div></section>
  <section><h2>Operations / s <span id="v-ops"></span></h2><canvas data-chart="ops"></canvas><div class="legend" data-legend="ops"></div></section>
  <section><h2>Memory <span id="v-memory"></span></h2><canvas data-chart="memory"></canvas><div class="legend" data-legend="memory"></div></section>
  <section><h2>Hit rate per tier <span id="v-hits"></span></h2><canvas data-chart="hits"></canvas><div class="legend" data-legend="hits"></div></section>
  <section><h2>Connections <span id="v-connections"></span></h2><canvas data-chart="connections"></canvas><div class="legend" data-legend="connections"></div></section>
  <section><h2>Locks <span id="v-locks"></span></h2><canvas data-chart="locks"></canvas><div class="legend" data-legend="locks"></div></section>
  <section><h2>Sessions <span id="v-sessions"></span></h2><canvas data-chart="sessions"></canvas><div class="legend" data-legend="sessions"></div></section>
  <section><h2>Stream lag <span id="v-streams"></span></h2><canvas data-chart="streams"></canvas><table id="streams"></table></section>
  <section class="wide"><h2>Latest slow log <span>command and argument count only</span></h2><table id="slowlog"><tr><td>none yet</td></tr></table></section>
</main>
<script>
(() => {
  'use strict';
  const KEEP = 120;
  const COLORS = ['#2f6fde', '#e0663a', '#2a9d6f', '#a256d6', '#c9a227'];
  const SERIES = {
    latency: ['avg ms', 'max ms', 'ping ms'],
    ops: ['server ops/s', 'our commands/s'],
    memory: ['used MB', 'maxmemory MB'],
    hits: ['L1 %', 'L2 %', 'server %'],
    connections: ['open', 'max'],
    locks: ['held', 'waiting'],
    sessions: ['operations/s'],
    streams: ['total lag'],
  };
  const charts = {};
  for (const canvas of document.querySelectorAll('canvas[data-chart]')) {
    const name = canvas.dataset.chart;
    charts[name] = { canvas, series: SERIES[name].map(() => []), points: 0 };
    canvas.dataset.points = '0';
    document.querySelector('[data-legend="' + name + '"]') &&
      (document.querySelector('[data-legend="' + name + '"]').innerHTML = SERIES[name]
        .map((label, i) => '<i style="background:' + COLORS[i] + '"></i>' + label).join(''));
  }
  const text = (id, value) => { const el = document.getElementById(id); if (el) el.textContent = value; };
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
  const fmt = (v, digits = 1) => (v === null || v === undefined || Number.isNaN(v) ? '–' : Number(v).toFixed(digits));

  function push(name, values) {
    const chart = charts[name];
    values.forEach((v, i) => {
      const s = chart.series[i];
      s.push(v === undefined ? null : v);
      if (s.length > KEEP) s.shift();
    });
    chart.points++;
    chart.canvas.dataset.points = String(chart.points);
    draw(chart);
  }

  function draw(chart) {
    const c = chart.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (c.width !== w * ratio) { c.width = w * ratio; c.height = h * ratio; }
    const g = c.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    let max = 0;
    for (const s of chart.series) for (const v of s) if (v !== null && v > max) max = v;
    max = max > 0 ? max * 1.1 : 1;
    g.strokeStyle = 'rgba(128,128,128,.25)';
    g.lineWidth = 1;
    g.beginPath(); g.moveTo(0, h - 0.5); g.lineTo(w, h - 0.5); g.stroke();
    g.fillStyle = 'rgba(128,128,128,.9)';
    g.font = '10px system-ui, sans-serif';
    g.fillText(fmt(max, max < 10 ? 2 : 0), 2, 10);
    chart.series.forEach((s, i) => {
      g.strokeStyle = COLORS[i];
      g.lineWidth = 1.5;
      g.beginPath();
      let started = false;
      s.forEach((v, x) => {
        if (v === null) { started = false; return; }
        const px = (x / (KEEP - 1)) * w, py = h - 2 - (v / max) * (h - 14);
        if (started) g.lineTo(px, py); else { g.moveTo(px, py); started = true; }
      });
      g.stroke();
    });
  }

  let prev = null;
  let samples = 0;
  function rate(now, before, path) {
    if (!before) return null;
    const a = path(now), b = path(before);
    const secs = (now.at - before.at) / 1000;
    return a === null || b === null || secs <= 0 ? null : Math.max(0, (a - b) / secs);
  }
  function ratio(now, before, hits, misses) {
    if (!before || !now.cache || !before.cache) return null;
    const h = hits(now.cache) - hits(before.cache), m = misses(now.cache) - misses(before.cache);
    return h + m > 0 ? (100 * h) / (h + m) : null;
  }

  function onSample(s) {
    const secs = prev ? (s.at - prev.at) / 1000 : ${opts.interval / 1000};
    push('latency', [s.commands.avgMs, s.commands.maxMs, s.pingMs]);
    text('v-latency', 'avg ' + fmt(s.commands.avgMs, 2) + ' ms, ping ' + fmt(s.pingMs, 2) + ' ms');
    const ours = secs > 0 ? s.commands.count / secs : null;
    push('ops', [s.server ? s.server.opsPerSec : null, ours]);
    text('v-ops', fmt(s.server ? s.server.opsPerSec : null, 0) + ' server');
    const mb = (b) => (b === null || b === undefined ? null : b / 1048576);
    push('memory', [s.server ? mb(s.server.usedMemory) : null, s.server && s.server.maxMemory ? mb(s.server.maxMemory) : null]);
    text('v-memory', fmt(s.server ? mb(s.server.usedMemory) : null) + ' MB');
    const l1 = ratio(s, prev, (c) => c.l1.hits, (c) => c.l1.misses);
    const l2 = ratio(s, prev, (c) => c.l2.hits, (c) => c.l2.misses);
    const server = s.server && s.server.hitRate !== null ? 100 * s.server.hitRate : null;
    push('hits', [l1, l2, server]);
    text('v-hits', s.cache ? 'L1 ' + s.cache.l1.hits + '/' + (s.cache.l1.hits + s.cache.l1.misses) + ', L2 ' + s.cache.l2.hits + '/' + (s.cache.l2.hits + s.cache.l2.misses) : 'no cache');
    push('connections', [s.connections.open, s.connections.max]);
    text('v-connections', s.connections.open + ' of ' + s.connections.max);
    push('locks', [s.locks.held, s.locks.waiting]);
    text('v-locks', s.locks.acquired + ' acquired, ' + s.locks.failed + ' failed');
    const total = (x) => Object.values(x.sessions).reduce((a, b) => a + b, 0);
    push('sessions', [rate(s, prev, total)]);
    text('v-sessions', total(s) + ' operations');
    const lag = s.streams.reduce((a, r) => a + (r.lag || 0), 0);
    push('streams', [s.streams.length ? lag : null]);
    text('v-streams', s.streams.length ? lag + ' entries behind' : 'no stream configured');
    document.getElementById('streams').innerHTML = s.streams
      .map((r) => '<tr><td>' + esc(r.stream) + '</td><td>' + esc(r.group) + '</td><td>lag ' + esc(r.lag === null ? '?' : r.lag) + '</td><td>pending ' + esc(r.pending) + '</td></tr>')
      .join('');
    document.getElementById('slowlog').innerHTML = s.slowlog.length
      ? '<tr><th>when</th><th>µs</th><th>command</th></tr>' + s.slowlog
          .map((e) => '<tr><td>' + esc(new Date(e.at).toLocaleTimeString()) + '</td><td>' + esc(e.durationMicros) + '</td><td>' + esc(e.command.join(' ')) + '</td></tr>')
          .join('')
      : '<tr><td>none</td></tr>';
    text('errors', s.errors.join('; '));
    samples++;
    document.body.dataset.samples = String(samples);
    text('status', 'live, ' + new Date(s.at).toLocaleTimeString());
    document.getElementById('status').className = '';
    prev = s;
  }

  const base = location.pathname.replace(/\\/+$/, '');
  const source = new EventSource(base + '/events');
  source.onmessage = (e) => { try { onSample(JSON.parse(e.data)); } catch (err) { text('errors', String(err)); } };
  source.onerror = () => { const el = document.getElementById('status'); el.textContent = 'disconnected, retrying…'; el.className = 'down'; };
  window.addEventListener('resize', () => Object.values(charts).forEach(draw));
})();
</script>
</body>
</html>
`;
}
