// One model: headline metrics, how the kept candidate was chosen, the baseline vs
// transfer comparison when the API reports one, per-class scores, the confusion matrix as
// a heat map, the download button, and the try-it panel.

import { h, replace, card, fmt, errorBox, facts, isAbort } from '../dom.js';
import { get, del, downloadModel } from '../api.js';
import { confusionHeatMap } from '../charts.js';
import { tryIt } from './tryit.js';

function headline(m) {
  const v = m.validation || {};
  const tiles = [
    ['Accuracy', fmt.pct(m.accuracy), 'metric-accuracy'],
    ['Macro-F1', fmt.num(m.macro_f1), 'metric-macro-f1'],
    ['Log loss', fmt.num(m.log_loss), 'metric-log-loss'],
    ['Calibration error (ECE)', fmt.num(m.ece), 'metric-ece'],
  ];
  const n = m.num_examples ?? v.num_valid;
  return h('div', {},
    h('ul', { class: 'tiles' }, tiles.map(([name, value, id]) =>
      h('li', { class: 'tile', id }, h('span', { class: 'tile-value', text: value }), h('span', { class: 'tile-name', text: name })))),
    h('p', { class: 'hint' }, typeof n === 'number'
      ? `Measured on ${fmt.int(n)} held-out validation examples${v.strategy ? ` (${v.strategy}${v.fraction ? `, ${fmt.pct(v.fraction, 0)}` : ''}${v.folds ? `, ${v.folds} folds` : ''})` : ''}.`
      : ''));
}

function candidates(m) {
  const c = m.candidates;
  if (!c) return null;
  const rows = Object.entries(c).map(([name, x]) => {
    const val = x.validation || x;
    return h('tr', { class: name === m.selected ? 'is-selected' : null },
      h('th', { scope: 'row' }, fmt.candidate(name), name === m.selected ? h('span', { class: 'pill pill-ok', text: 'kept' }) : null),
      h('td', { class: 'num', text: fmt.num(val.val_loss) }),
      h('td', { class: 'num', text: fmt.pct(val.val_accuracy) }),
      h('td', { text: x.epochs_run ? `best epoch ${x.best_epoch} of ${x.epochs_run}` : '' }));
  });
  return card('How the model was chosen',
    m.selection_reason ? h('p', {}, h('strong', { text: `${fmt.candidate(m.selected)}: ` }), m.selection_reason) : null,
    h('div', { class: 'table-scroll' }, h('table', { class: 'data-table' },
      h('thead', {}, h('tr', {}, ['Candidate', 'Validation loss', 'Validation accuracy', ''].map((t, i) => h('th', { scope: 'col', class: i === 1 || i === 2 ? 'num' : null, text: t })))),
      h('tbody', {}, rows))));
}

/** Baseline vs transfer, when the API reports `baseline` and/or `transfer_gain`. */
function comparison(m) {
  const { baseline, transfer_gain: gain } = m;
  if (baseline === undefined && gain === undefined) return null;
  const rows = [];
  if (baseline && typeof baseline === 'object') {
    for (const [key, value] of Object.entries(baseline)) {
      if (typeof value !== 'number') continue;
      const mine = typeof m[key] === 'number' ? m[key] : null;
      const show = (x) => (x === null ? '—' : key === 'accuracy' ? fmt.pct(x) : fmt.num(x));
      rows.push(h('tr', {},
        h('th', { scope: 'row', text: fmt.words(key) }),
        h('td', { class: 'num', text: show(value) }),
        h('td', { class: 'num', text: show(mine) }),
        h('td', { class: 'num', text: mine === null ? '—' : `${mine - value >= 0 ? '+' : ''}${fmt.num(mine - value)}` })));
    }
  }
  const describe = baseline && (baseline.description || baseline.name || baseline.method);
  const gainText = typeof gain === 'number' ? `${gain >= 0 ? '+' : ''}${fmt.num(gain)}` : gain && typeof gain === 'object' ? fmt.value(gain) : null;
  return card('Baseline vs transfer',
    describe ? h('p', { text: `Baseline: ${describe}` }) : null,
    rows.length ? h('div', { class: 'table-scroll' }, h('table', { class: 'data-table', id: 'baseline-table' },
      h('thead', {}, h('tr', {}, ['Metric', 'Baseline', 'Transfer (this model)', 'Gain'].map((t, i) => h('th', { scope: 'col', class: i ? 'num' : null, text: t })))),
      h('tbody', {}, rows))) : null,
    gainText ? h('p', { id: 'transfer-gain' }, h('strong', { text: 'Transfer gain: ' }), gainText) : null);
}

function perClass(m) {
  const entries = Object.entries(m.per_class || {});
  if (!entries.length) return null;
  return card('Per class',
    h('div', { class: 'table-scroll' }, h('table', { class: 'data-table', id: 'per-class' },
      h('thead', {}, h('tr', {}, ['Label', 'Precision', 'Recall', 'F1', 'Support'].map((t, i) => h('th', { scope: 'col', class: i ? 'num' : null, text: t })))),
      h('tbody', {}, entries.map(([label, x]) => h('tr', {},
        h('th', { scope: 'row', text: label }),
        h('td', { class: 'num', text: fmt.num(x.precision) }),
        h('td', { class: 'num', text: fmt.num(x.recall) }),
        h('td', { class: 'num', text: fmt.num(x.f1) }),
        h('td', { class: 'num', text: fmt.int(x.support) })))))));
}

function actions(model, navigate) {
  const message = h('div', { id: 'model-action-message' });
  const download = h('button', { type: 'button', class: 'button', id: 'download-model', text: 'Download the model (.zip)' });
  download.addEventListener('click', async () => {
    download.disabled = true;
    replace(message, h('p', { class: 'muted', text: 'Preparing the archive…' }));
    try {
      const bytes = await downloadModel(model.id);
      replace(message, h('p', { class: 'muted', text: `Downloaded ${(bytes / 1e6).toFixed(1)} MB.` }));
    } catch (err) {
      replace(message, errorBox(err, 'Download failed'));
    } finally {
      download.disabled = false;
    }
  });
  const remove = h('button', { type: 'button', class: 'button button-danger', text: 'Delete' });
  remove.addEventListener('click', async () => {
    if (!window.confirm('Delete this model? Predictions with it stop working.')) return;
    try {
      await del(`/v1/models/${model.id}`);
      navigate('#/models');
    } catch (err) {
      replace(message, errorBox(err, 'Not deleted'));
    }
  });
  return h('div', { class: 'actions' }, download, remove, message);
}

export async function modelPage(view, { params, signal, navigate }) {
  const id = params[0];
  replace(view, h('h1', { tabindex: '-1', text: 'Model' }), h('p', { class: 'muted', text: 'Loading…' }));
  let model;
  try {
    model = await get(`/v1/models/${encodeURIComponent(id)}`, { signal });
  } catch (err) {
    if (!isAbort(err)) replace(view, h('h1', { tabindex: '-1', text: 'Model' }), errorBox(err, 'Could not load the model'));
    return;
  }
  document.title = `Model ${fmt.shortId(id)} · Warmstart`;
  const m = model.metrics || {};
  replace(view,
    h('p', { class: 'crumbs' }, h('a', { href: '#/models', text: 'Models' }), ' / ',
      model.job_id ? h('a', { href: `#/jobs/${model.job_id}`, text: 'job' }) : 'imported',
      model.dataset_id ? [' · ', h('a', { href: `#/datasets/${model.dataset_id}`, text: 'dataset' })] : null),
    h('h1', { tabindex: '-1', text: `Model ${fmt.shortId(id)}` }),
    h('p', { class: 'lead' }, `${model.modality === 'image' ? 'An' : 'A'} ${model.modality} classifier on `, h('strong', { text: model.backbone }),
      ` with ${model.labels.length} labels: `, model.labels.join(', '), '.'),
    actions(model, navigate),
    card('Validation metrics', headline(m)),
    tryIt(model),
    comparison(m),
    candidates(m),
    h('div', { class: 'grid-2' },
      perClass(m),
      m.confusion_matrix ? card('Confusion matrix', confusionHeatMap(m.confusion_matrix)) : null),
    card('Details', facts([
      ['Id', h('code', { text: model.id })],
      ['Created', fmt.date(model.created_at)],
      ['Backbone', model.backbone],
      ['Modality', model.modality],
    ])));
}
