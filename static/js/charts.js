// Charts drawn without a library: horizontal bars (label counts, scores), per-epoch line
// charts (SVG) and the confusion-matrix heat map (a real table, so it reads as data).

import { h, svg, fmt } from './dom.js';

/** Horizontal bars for [{label, value, text}] scaled to the largest value. */
export function barList(items, { className = '', max } = {}) {
  const top = max ?? Math.max(1e-12, ...items.map((i) => i.value));
  return h('ul', { class: `bars ${className}` },
    items.map((item) => h('li', { class: 'bar-row' },
      h('span', { class: 'bar-label', title: item.label, text: item.label }),
      h('span', { class: 'bar-track', 'aria-hidden': 'true' },
        h('span', { class: 'bar-fill', style: `width:${Math.max(0, Math.min(100, (item.value / top) * 100)).toFixed(1)}%` })),
      h('span', { class: 'bar-value', text: item.text ?? String(item.value) }))));
}

/** Bars of a dataset's label counts. */
export function labelCountChart(labelCounts) {
  const items = Object.entries(labelCounts || {})
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([label, n]) => ({ label, value: n, text: fmt.int(n) }));
  const chart = barList(items, { className: 'bars-counts' });
  chart.setAttribute('aria-label', 'Examples per label');
  return chart;
}

/** Score bars of one prediction's top-k. */
export function scoreBars(topK) {
  const chart = barList(topK.map((t) => ({ label: t.label, value: t.score, text: fmt.pct(t.score) })),
    { className: 'bars-scores', max: 1 });
  chart.setAttribute('aria-label', 'Top labels with scores');
  return chart;
}

function niceTicks(lo, hi, count = 4) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toFixed(10)));
  return ticks;
}

/**
 * A line chart. `series`: [{name, cls, points: [{x, y, note}]}]; `bands`: shaded x-ranges
 * [{from, to, label}] (the job's stages); `yRange` fixes the y-axis (accuracy: [0, 1]).
 */
export function lineChart({ title, series, bands = [], yRange, yFormat = (v) => fmt.num(v, 2), xLabel }) {
  const W = 560, H = 240, L = 48, R = 12, T = 14, B = 40;
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p.x);
  const xMin = Math.min(1, ...xs), xMax = Math.max(2, ...xs);
  let [yMin, yMax] = yRange || [Math.min(...all.map((p) => p.y)), Math.max(...all.map((p) => p.y))];
  if (!Number.isFinite(yMin) || !Number.isFinite(yMax)) [yMin, yMax] = [0, 1];
  if (!yRange) {
    const pad = (yMax - yMin) * 0.08 || 0.1;
    yMin = Math.max(0, yMin - pad);
    yMax += pad;
  }
  const sx = (x) => L + ((x - xMin) / (xMax - xMin)) * (W - L - R);
  const sy = (y) => T + (1 - (y - yMin) / (yMax - yMin || 1)) * (H - T - B);

  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title });
  root.append(svg('title', {}, title));
  for (const band of bands) {
    const x0 = sx(band.from - 0.5 < xMin ? xMin : band.from - 0.5);
    const x1 = sx(band.to + 0.5 > xMax ? xMax : band.to + 0.5);
    root.append(svg('rect', { x: x0, y: T, width: Math.max(0, x1 - x0), height: H - T - B, class: `band ${band.cls || ''}` }));
    if (band.label) {
      root.append(svg('line', { x1: x0, x2: x0, y1: T, y2: H - B, class: 'band-edge' }));
      root.append(svg('text', { x: x0 + 4, y: T + 12, class: 'band-label' }, band.label));
    }
  }
  for (const t of niceTicks(yMin, yMax)) {
    root.append(svg('line', { x1: L, x2: W - R, y1: sy(t), y2: sy(t), class: 'grid' }));
    root.append(svg('text', { x: L - 6, y: sy(t) + 4, class: 'tick', 'text-anchor': 'end' }, yFormat(t)));
  }
  for (const t of niceTicks(xMin, xMax, 6).filter((t) => Number.isInteger(t))) {
    root.append(svg('text', { x: sx(t), y: H - B + 16, class: 'tick', 'text-anchor': 'middle' }, String(t)));
  }
  root.append(svg('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, class: 'axis' }));
  root.append(svg('line', { x1: L, x2: L, y1: T, y2: H - B, class: 'axis' }));
  if (xLabel) root.append(svg('text', { x: (L + W - R) / 2, y: H - 6, class: 'axis-label', 'text-anchor': 'middle' }, xLabel));

  const many = all.length > 120; // dots only while they stay readable
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p.y));
    if (!pts.length) continue;
    // A new sub-path at each segment (fold) so folds are not joined by a line.
    const d = pts.map((p, i) => `${i && pts[i - 1].segment === p.segment ? 'L' : 'M'}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join('');
    root.append(svg('path', { d, class: `line ${s.cls}`, 'data-points': pts.length }));
    if (many) continue;
    for (const p of pts) {
      root.append(svg('circle', { cx: sx(p.x), cy: sy(p.y), r: 2.5, class: `dot ${s.cls}` },
        svg('title', {}, `${s.name}: ${yFormat(p.y)}${p.note ? ` (${p.note})` : ''}`)));
    }
  }
  const legend = h('ul', { class: 'legend' },
    series.map((s) => h('li', {}, h('span', { class: `swatch ${s.cls}`, 'aria-hidden': 'true' }), s.name)));
  return h('figure', { class: 'chart-figure' }, h('figcaption', { text: title }), root, legend);
}

/**
 * The confusion matrix as a table (rows: true label, columns: predicted), each cell
 * shaded by its share of the row so classes of any size compare.
 */
export function confusionHeatMap({ labels, matrix }) {
  const table = h('table', { class: 'heatmap' },
    h('caption', { text: 'Rows: true label · columns: predicted label · shade: share of the row' }),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col', class: 'corner', text: 'true ↓ / predicted →' }),
      labels.map((l) => h('th', { scope: 'col', title: l, text: l })))),
    h('tbody', {}, matrix.map((row, i) => {
      const total = row.reduce((a, b) => a + b, 0) || 1;
      return h('tr', {}, h('th', { scope: 'row', title: labels[i], text: labels[i] }),
        row.map((n, j) => {
          const share = n / total;
          const kind = i === j ? 'hit' : 'miss';
          return h('td', {
            class: `cell cell-${kind}${share > 0.55 ? ' cell-dark' : ''}`,
            style: `--share:${share.toFixed(3)}`,
            title: `true ${labels[i]}, predicted ${labels[j]}: ${n} (${fmt.pct(share, 0)} of the row)`,
            text: String(n),
          });
        }));
    })));
  return h('div', { class: 'table-scroll' }, table);
}
