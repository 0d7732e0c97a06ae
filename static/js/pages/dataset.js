// One dataset: its summary (modality, size, labels as bars, warnings), the form that
// starts a training job (blank fields = the service chooses), and the jobs run on it.

import { h, replace, card, fmt, errorBox, facts, isAbort } from '../dom.js';
import { get, post, del } from '../api.js';
import { labelCountChart } from '../charts.js';
import { datasetJobs } from './lists.js';

function summary(d) {
  const warnings = d.warnings || [];
  return [
    h('section', { class: 'card', id: 'dataset-summary' }, h('h2', { text: 'Summary' }),
      facts([
        ['Modality', h('span', { class: 'pill', text: d.modality })],
        ['Examples', h('span', { id: 'dataset-count', text: fmt.int(d.num_examples) })],
        ['Labels', fmt.int((d.labels || []).length)],
        d.format ? ['Format', d.format.toUpperCase()] : null,
        ['Uploaded', fmt.date(d.created_at)],
        ['Id', h('code', { text: d.id })],
      ])),
    card('Examples per label', labelCountChart(d.label_counts)),
    card('Warnings', warnings.length
      ? h('ul', { class: 'warnings', id: 'dataset-warnings' }, warnings.map((w) => h('li', { text: w })))
      : h('p', { class: 'muted', id: 'dataset-warnings', text: 'None: the data looks fine.' })),
  ];
}

function numberField(id, label, hint, attrs) {
  return h('div', { class: 'field' },
    h('label', { for: id, text: label }),
    h('input', { type: 'number', id, name: id, inputmode: 'decimal', placeholder: 'auto', ...attrs }),
    h('p', { class: 'hint', id: `${id}-hint`, text: hint }));
}

/** Reads the form into a job request, leaving out every blank field. */
function jobRequest(form, datasetId) {
  const value = (name) => form.elements[name].value.trim();
  const req = { dataset_id: datasetId, backbone: value('backbone') || 'auto' };
  const hp = {};
  if (value('head_epochs')) hp.head_epochs = Number(value('head_epochs'));
  if (value('finetune_epochs')) hp.finetune_epochs = Number(value('finetune_epochs'));
  if (Object.keys(hp).length) req.hyperparameters = hp;
  const strategy = value('strategy');
  if (strategy === 'holdout') req.validation = value('fraction') ? { strategy, fraction: Number(value('fraction')) } : { strategy };
  else if (strategy === 'kfold') req.validation = value('folds') ? { strategy, folds: Number(value('folds')) } : { strategy };
  if (value('seed')) req.seed = Number(value('seed'));
  return req;
}

function jobForm(dataset, backbones, navigate) {
  const options = backbones.filter((b) => b.modality === dataset.modality);
  const select = h('select', { id: 'backbone', name: 'backbone' },
    h('option', { value: 'auto', text: 'auto (chosen for the data)' }),
    options.map((b) => h('option', { value: b.id, disabled: !b.available, text: `${b.id}${b.available ? '' : ' (not installed)'}` })));
  const strategy = h('select', { id: 'strategy', name: 'strategy', 'aria-describedby': 'strategy-hint' },
    h('option', { value: '', text: 'auto (chosen for the data)' }),
    h('option', { value: 'holdout', text: 'Stratified holdout' }),
    h('option', { value: 'kfold', text: 'Stratified k-fold' }));
  const fraction = numberField('fraction', 'Validation fraction', 'Share held out for validation, 0.05–0.5 (blank: 0.2).', { min: '0.05', max: '0.5', step: '0.05' });
  const folds = numberField('folds', 'Folds', 'Number of folds, 2–20 (blank: 5).', { min: '2', max: '20', step: '1' });
  fraction.hidden = true;
  folds.hidden = true;
  strategy.addEventListener('change', () => {
    fraction.hidden = strategy.value !== 'holdout';
    folds.hidden = strategy.value !== 'kfold';
  });
  const message = h('div', { id: 'job-form-message' });
  const submit = h('button', { type: 'submit', class: 'button button-primary', id: 'start-job', text: 'Start training' });
  const form = h('form', { id: 'job-form', class: 'job-form', novalidate: true },
    h('p', { class: 'hint' }, 'Leave a field blank and the service chooses it from the data (size, classes, balance); the job page lists every choice with its reason.'),
    h('div', { class: 'form-grid' },
      h('div', { class: 'field' }, h('label', { for: 'backbone', text: 'Backbone' }), select),
      numberField('head_epochs', 'Head epochs', 'Epochs of training the new head on cached features (1–10000).', { min: '1', max: '10000', step: '1' }),
      numberField('finetune_epochs', 'Fine-tuning epochs', 'Epochs of fine-tuning the backbone; 0 = head only (0–1000).', { min: '0', max: '1000', step: '1' }),
      h('div', { class: 'field' }, h('label', { for: 'strategy', text: 'Validation' }), strategy,
        h('p', { class: 'hint', id: 'strategy-hint', text: 'How the model is measured and early-stopped.' })),
      fraction, folds,
      numberField('seed', 'Seed', 'Fixes the split and the initialisation (default 0).', { min: '0', step: '1' })),
    h('div', { class: 'actions' }, submit),
    message);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    submit.disabled = true;
    replace(message);
    try {
      const job = await post('/v1/jobs', jobRequest(form, dataset.id));
      navigate(`#/jobs/${job.id}`);
    } catch (err) {
      replace(message, errorBox(err, 'The job was not started'));
      submit.disabled = false;
    }
  });
  return form;
}

function deleteButton(dataset, navigate) {
  const message = h('div');
  const button = h('button', { type: 'button', class: 'button button-danger', text: 'Delete this dataset' });
  button.addEventListener('click', async () => {
    if (!window.confirm(`Delete the dataset “${dataset.name}”? Models trained on it are kept.`)) return;
    try {
      await del(`/v1/datasets/${dataset.id}`);
      navigate('#/datasets');
    } catch (err) {
      replace(message, errorBox(err, 'Not deleted'));
    }
  });
  return h('div', { class: 'danger-zone' }, button, message);
}

export async function datasetPage(view, { params, signal, navigate }) {
  const id = params[0];
  replace(view, h('h1', { tabindex: '-1', text: 'Dataset' }), h('p', { class: 'muted', text: 'Loading…' }));
  let dataset, backbones;
  try {
    [dataset, backbones] = await Promise.all([
      get(`/v1/datasets/${encodeURIComponent(id)}`, { signal }),
      get('/v1/backbones', { signal }).then((b) => b.data || []),
    ]);
  } catch (err) {
    if (!isAbort(err)) replace(view, h('h1', { tabindex: '-1', text: 'Dataset' }), errorBox(err, 'Could not load the dataset'));
    return;
  }
  document.title = `${dataset.name} · Warmstart`;
  const jobs = h('div', { id: 'dataset-jobs' });
  replace(view,
    h('p', { class: 'crumbs' }, h('a', { href: '#/datasets', text: 'Datasets' }), ' / '),
    h('h1', { tabindex: '-1', id: 'dataset-title', text: dataset.name }),
    h('div', { class: 'grid-3' }, summary(dataset)),
    card('Train a model', jobForm(dataset, backbones, navigate)),
    card('Jobs on this dataset', jobs),
    deleteButton(dataset, navigate));
  datasetJobs(jobs, id, signal);
}
