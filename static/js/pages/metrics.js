// The model page's metric sections, each drawn from the model's `metrics` and left out
// when the API does not report its part: headline tiles, baseline vs transfer,
// cross-validation folds, how the kept candidate was chosen, calibration, per class.

import { h, card, fmt } from '../dom.js';

const METRIC_NAMES = { accuracy: 'Accuracy', macro_f1: 'Macro-F1', log_loss: 'Log loss' };

function headRow(names, numeric = () => true) {
  return h('thead', {}, h('tr', {}, names.map((t, i) => h('th', { scope: 'col', class: i && numeric(i) ? 'num' : null, text: t }))));
}

function dataTable(id, head, rows) {
  return h('div', { class: 'table-scroll' }, h('table', { class: 'data-table', id }, head, h('tbody', {}, rows)));
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** A metric's value as text: accuracy in %, the rest with 3 decimals. */
function show(key, x) {
  return key === 'accuracy' ? fmt.pct(x) : fmt.num(x);
}

function where(v, n) {
  if (v.strategy === 'kfold') {
    return `Out-of-fold over all ${fmt.int(n)} examples (${v.folds}-fold cross-validation): every example predicted by a model that did not train on it.`;
  }
  if (v.strategy === 'holdout') return `Measured on ${fmt.int(n)} held-out validation examples (stratified ${fmt.pct(v.fraction, 0)} holdout).`;
  return typeof n === 'number' ? `Measured on ${fmt.int(n)} held-out examples.` : '';
}

export function headline(m) {
  const v = m.validation || {};
  const tiles = [
    ['Accuracy', fmt.pct(m.accuracy), 'metric-accuracy'],
    ['Macro-F1', fmt.num(m.macro_f1), 'metric-macro-f1'],
    ['Log loss', fmt.num(m.log_loss), 'metric-log-loss'],
    // Predictions are served with the fitted temperature: its (cross-fitted) error is the one users see.
    m.calibration ? ['Calibration error (ECE, calibrated)', fmt.num(m.calibration.ece_after), 'metric-ece']
      : ['Calibration error (ECE)', fmt.num(m.ece), 'metric-ece'],
  ];
  return card('Validation metrics',
    h('ul', { class: 'tiles' }, tiles.map(([name, value, id]) =>
      h('li', { class: 'tile', id }, h('span', { class: 'tile-value', text: value }), h('span', { class: 'tile-name', text: name })))),
    h('p', { class: 'hint', text: where(v, m.num_examples ?? v.num_valid) }));
}

/** Baseline (no pre-trained knowledge) vs this model, with the API's transfer gain. */
export function comparison(m) {
  const base = m.baseline;
  const gain = m.transfer_gain && typeof m.transfer_gain === 'object' ? m.transfer_gain : {};
  if (!base || typeof base !== 'object') return null;
  const rows = Object.keys(METRIC_NAMES).filter((k) => typeof base[k] === 'number').map((k) => {
    const mine = m[k];
    const delta = typeof gain[k] === 'number' ? gain[k] : typeof mine === 'number' ? mine - base[k] : null;
    let deltaText = '—';
    if (delta !== null) {
      const sign = delta >= 0 ? '+' : '−';
      deltaText = k === 'accuracy' ? `${sign}${(Math.abs(delta) * 100).toFixed(1)} pts` : `${sign}${fmt.num(Math.abs(delta))}`;
      if (k === 'log_loss') deltaText += ' (lower is better)';
    }
    return h('tr', {},
      h('th', { scope: 'row', text: METRIC_NAMES[k] }),
      h('td', { class: 'num', text: show(k, base[k]) }),
      h('td', { class: 'num', text: show(k, mine) }),
      h('td', { class: 'num gain', text: deltaText }));
  });
  return card('Baseline vs transfer',
    base.method ? h('p', {}, h('strong', { text: 'Baseline: ' }), base.method, '. Same data, same splits.') : null,
    dataTable('baseline-table', headRow(['Metric', 'Baseline', 'Transfer (this model)', 'Transfer gain']), rows),
    typeof gain.accuracy === 'number'
      ? h('p', { class: 'hint', id: 'transfer-gain' }, `Pre-trained features ${gain.accuracy >= 0 ? 'add' : 'cost'} ${(Math.abs(gain.accuracy) * 100).toFixed(1)} accuracy points over learning from this data alone.`)
      : null);
}

/** Per-fold scores and mean ± std, for k-fold jobs. */
export function crossValidation(m) {
  if (!Array.isArray(m.folds) || !m.folds.length) return null;
  const cv = m.cv || {};
  const summary = Object.keys(METRIC_NAMES).filter((k) => cv[k]).map((k) =>
    h('li', {}, h('strong', { text: `${METRIC_NAMES[k]}: ` }),
      k === 'accuracy' ? `${fmt.pct(cv[k].mean)} ± ${fmt.pct(cv[k].std)}` : `${fmt.num(cv[k].mean)} ± ${fmt.num(cv[k].std)}`));
  const rows = m.folds.map((f) => h('tr', {},
    h('th', { scope: 'row', text: `Fold ${f.fold}` }),
    h('td', { class: 'num', text: fmt.int(f.num_valid) }),
    h('td', { class: 'num', text: fmt.pct(f.accuracy) }),
    h('td', { class: 'num', text: fmt.num(f.macro_f1) }),
    h('td', { class: 'num', text: fmt.num(f.log_loss) }),
    h('td', { text: f.finetuned ? 'fine-tuned' : 'head only' })));
  const fit = m.final_fit;
  return card('Cross-validation',
    h('ul', { class: 'inline-list', id: 'cv-summary' }, summary),
    h('p', { class: 'hint', text: 'Mean ± standard deviation over the folds.' }),
    dataTable('folds', headRow(['Fold', 'Validated on', 'Accuracy', 'Macro-F1', 'Log loss', 'Best in fold'], (i) => i < 5), rows),
    fit ? h('p', { class: 'hint' }, `The model you use was then trained on all ${fmt.int(fit.num_train)} examples, `
      + `${plural(fit.head_epochs, 'head epoch')}${fit.finetune_epochs ? ` and ${plural(fit.finetune_epochs, 'fine-tuning epoch')}` : ', no fine-tuning'} (chosen from the folds).`) : null);
}

/** Head only vs fine-tuned (and for text the lexical model), and why one was kept. */
export function candidates(m) {
  const c = m.candidates;
  if (!c) return null;
  const blend = m.lexical_blend;
  const rows = Object.entries(c).map(([name, x]) => {
    const kept = name === m.selected;
    const cells = !x
      ? [h('td', { colspan: '3', class: 'muted', text: 'not run' })]
      : 'accuracy' in x
        ? [h('td', { class: 'num', text: fmt.pct(x.accuracy) }), h('td', { class: 'num', text: fmt.num(x.macro_f1) }), h('td', { class: 'num', text: fmt.num(x.log_loss) })]
        : [h('td', { class: 'num', text: fmt.pct((x.validation || x).val_accuracy) }), h('td', { class: 'num', text: '—' }), h('td', { class: 'num', text: fmt.num((x.validation || x).val_loss) })];
    return h('tr', { class: kept ? 'is-selected' : null },
      h('th', { scope: 'row' }, fmt.candidate(name), kept ? h('span', { class: 'pill pill-ok', text: 'kept' }) : null),
      cells);
  });
  return card('How the model was chosen',
    m.selection_reason ? h('p', {}, h('strong', { text: `${fmt.candidate(m.selected)}: ` }), m.selection_reason) : null,
    blend ? h('p', { id: 'lexical-blend' }, h('strong', { text: blend.transfer_weight < 1 ? 'Blended with the lexical model: ' : 'Not blended: ' }), blend.reason) : null,
    dataTable('candidates', headRow(['Candidate', 'Accuracy', 'Macro-F1', 'Log loss']), rows));
}

/** Temperature scaling of the scores. */
export function calibration(m) {
  const c = m.calibration;
  if (!c) return null;
  return card('Calibration',
    h('p', {}, `Scores are calibrated by temperature scaling (T = ${fmt.num(c.temperature)}): expected calibration error `,
      h('strong', { text: `${fmt.num(c.ece_before)} → ${fmt.num(c.ece_after)}` }), '.'),
    c.method ? h('p', { class: 'hint', text: fmt.words(c.method) }) : null);
}

export function perClass(m) {
  const entries = Object.entries(m.per_class || {});
  if (!entries.length) return null;
  return card('Per class',
    dataTable('per-class', headRow(['Label', 'Precision', 'Recall', 'F1', 'Support']),
      entries.map(([label, x]) => h('tr', {},
        h('th', { scope: 'row', text: label }),
        h('td', { class: 'num', text: fmt.num(x.precision) }),
        h('td', { class: 'num', text: fmt.num(x.recall) }),
        h('td', { class: 'num', text: fmt.num(x.f1) }),
        h('td', { class: 'num', text: fmt.int(x.support) })))));
}
