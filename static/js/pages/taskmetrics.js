// The model page's metrics for regression (headline errors, the baselines, the interval and
// a predicted-vs-true scatter plot) and multi-label (micro/macro F1 and per-label bars), and
// which candidate was kept.

import { h, svg, card, fmt, facts } from '../dom.js';
import { barList } from '../charts.js';

/** Predicted (y) against true (x) held-out values, with the y = x line. */
function scatterPlot(points) {
  const W = 320, P = 36;
  const all = points.flat();
  const lo = Math.min(...all), hi = Math.max(...all);
  const span = hi - lo || 1;
  const sx = (v) => P + ((v - lo) / span) * (W - 2 * P);
  const sy = (v) => W - P - ((v - lo) / span) * (W - 2 * P);
  return svg('svg', { viewBox: `0 0 ${W} ${W}`, class: 'chart scatter', role: 'img', 'aria-label': 'Predicted against true values on held-out examples', id: 'regression-scatter' },
    svg('line', { x1: sx(lo), y1: sy(lo), x2: sx(hi), y2: sy(hi), stroke: 'currentColor', 'stroke-dasharray': '4 3', opacity: '0.5' }),
    points.map(([t, p]) => svg('circle', { cx: sx(t).toFixed(1), cy: sy(p).toFixed(1), r: 3, class: 's-val', fill: 'currentColor', opacity: '0.7' })),
    svg('text', { x: W / 2, y: W - 6, 'text-anchor': 'middle', 'font-size': 11 }, 'true'),
    svg('text', { x: 10, y: W / 2, 'font-size': 11, transform: `rotate(-90 10 ${W / 2})`, 'text-anchor': 'middle' }, 'predicted'));
}

function regression(m) {
  const b = m.baseline || {}, mean = m.mean_predictor || {};
  return [
    card('Held-out error', facts([
      ['MAE', fmt.num(m.mae)], ['RMSE', fmt.num(m.rmse)], ['R²', fmt.num(m.r2)], ['Spearman', fmt.num(m.spearman)],
      ['Baseline MAE', `${fmt.num(b.mae)} (${b.method || ''})`], ['Mean predictor MAE', fmt.num(mean.mae)],
      m.interval ? ['Interval', `± ${fmt.num(m.interval.half_width)} (${fmt.pct(m.interval.coverage, 0)} coverage, ${m.interval.method})`] : null,
      m.residuals ? ['Residuals', `median ${fmt.num(m.residuals.median)}, 5–95% ${fmt.num(m.residuals.p05)} to ${fmt.num(m.residuals.p95)}`] : null,
    ])),
    m.points && m.points.length ? card('Predicted vs true (held-out)', scatterPlot(m.points)) : null,
  ];
}

function multilabel(m) {
  const b = m.baseline || {};
  const per = m.per_label || [];
  return [
    card('Held-out scores', facts([
      ['Micro-F1', fmt.num(m.micro_f1)], ['Macro-F1', fmt.num(m.macro_f1)], ['Subset accuracy', fmt.pct(m.subset_accuracy)],
      ['Per-label frequency baseline', `micro-F1 ${fmt.num(b.micro_f1)}, macro-F1 ${fmt.num(b.macro_f1)}`],
    ])),
    card('F1 per label', barList(per.map((l) => ({ label: l.label, value: l.f1, text: `${fmt.num(l.f1)} (P ${fmt.num(l.precision)}, R ${fmt.num(l.recall)}, n=${l.support}, t=${fmt.num(l.threshold)})` })),
      { className: 'bars-scores', max: 1 })),
  ];
}

/** Which candidate is the model (head on frozen features, or fine-tuned) and why. */
function kept(m) {
  return card('How it was chosen', facts([
    m.selected ? ['Kept', fmt.candidate(m.selected)] : null,
    m.finetuning ? ['Why', m.finetuning] : null,
  ]));
}

/** The task's sections, or null for classification. */
export function taskSections(m) {
  if (m.task === 'regression') return [...regression(m), kept(m)];
  if (m.task === 'multilabel') return [...multilabel(m), kept(m)];
  return null;
}
