// One model: the download and delete buttons, the try-it panel, and its metrics
// (sections in metrics.js) with the confusion matrix as a heat map.

import { h, replace, card, fmt, errorBox, facts, isAbort } from '../dom.js';
import { get, del, downloadModel } from '../api.js';
import { confusionHeatMap } from '../charts.js';
import { tryIt } from './tryit.js';
import { headline, comparison, crossValidation, candidates, calibration, perClass } from './metrics.js';
import { suspectsCard } from './suspects.js';
import { taskSections } from './taskmetrics.js';

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
  const task = taskSections(m);
  if (task) {
    replace(view,
      h('h1', { tabindex: '-1', text: `Model ${fmt.shortId(id)}` }),
      h('p', { class: 'lead' }, `A ${model.modality} ${model.task} model on `, h('strong', { text: model.backbone }),
        model.labels.length ? ` with ${model.labels.length} labels: ${model.labels.join(', ')}.` : '.'),
      actions(model, navigate),
      tryIt(model),
      task,
      card('Details', facts([
        ['Id', h('code', { text: model.id })],
        ['Created', fmt.date(model.created_at)],
        ['Head', m.head || '—'],
        typeof m.train_seconds === 'number' ? ['Training time', `${m.train_seconds.toFixed(1)} s`] : null,
      ])));
    return;
  }
  replace(view,
    h('p', { class: 'crumbs' }, h('a', { href: '#/models', text: 'Models' }), ' / ',
      model.job_id ? h('a', { href: `#/jobs/${model.job_id}`, text: 'job' }) : 'imported',
      model.dataset_id ? [' · ', h('a', { href: `#/datasets/${model.dataset_id}`, text: 'dataset' })] : null),
    h('h1', { tabindex: '-1', text: `Model ${fmt.shortId(id)}` }),
    h('p', { class: 'lead' }, `${model.modality === 'image' ? 'An' : 'A'} ${model.modality} classifier on `, h('strong', { text: model.backbone }),
      ` with ${model.labels.length} labels: `, model.labels.join(', '), '.'),
    actions(model, navigate),
    headline(m),
    tryIt(model),
    comparison(m),
    crossValidation(m),
    candidates(m),
    h('div', { class: 'grid-2' },
      perClass(m),
      m.confusion_matrix ? card('Confusion matrix', confusionHeatMap(m.confusion_matrix)) : null),
    suspectsCard(model, signal),
    calibration(m),
    card('Details', facts([
      ['Id', h('code', { text: model.id })],
      ['Created', fmt.date(model.created_at)],
      ['Backbone', model.backbone],
      ['Modality', model.modality],
      typeof m.train_seconds === 'number' ? ['Training time', `${m.train_seconds.toFixed(1)} s`] : null,
    ])));
}
