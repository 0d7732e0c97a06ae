// The list pages: datasets (with the upload widget), jobs and models. Each row links to
// the resource's own page.

import { h, replace, card, fmt, errorBox, statusBadge, link } from '../dom.js';
import { get } from '../api.js';
import { uploadWidget } from './upload.js';

/** A table; headers ending in '#' are numeric columns ("Examples#"). */
function table(headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted empty', text: empty });
  return h('div', { class: 'table-scroll' },
    h('table', { class: 'data-table' },
      h('thead', {}, h('tr', {}, headers.map((t) => (t.endsWith('#')
        ? h('th', { scope: 'col', class: 'num', text: t.slice(0, -1) })
        : h('th', { scope: 'col', text: t }))))),
      h('tbody', {}, rows)));
}

/**
 * Fills `slot` with the first page of the list at `path` (newest first) and, while the API
 * says `has_more`, a "More" button that fetches the next page (`after` = `last_id`).
 */
async function fill(slot, path, what, signal, render) {
  replace(slot, h('p', { class: 'muted', text: 'Loading…' }));
  const items = [];
  const load = async (after) => {
    const sep = path.includes('?') ? '&' : '?';
    const body = await get(after ? `${path}${sep}after=${encodeURIComponent(after)}` : path, { signal });
    items.push(...(body.data || []));
    const more = body.has_more
      ? h('button', { type: 'button', class: 'button more', text: 'Show more' })
      : null;
    if (more) {
      more.addEventListener('click', () => {
        more.disabled = true;
        more.textContent = 'Loading…';
        load(body.last_id).catch(failed);
      });
    }
    replace(slot, render(items), more);
  };
  const failed = (err) => {
    if (err.name !== 'AbortError') replace(slot, errorBox(err, `Could not load ${what}`));
  };
  try {
    await load(null);
  } catch (err) {
    failed(err);
  }
}

function datasetRows(datasets) {
  return table(['Name', 'Modality', 'Examples#', 'Labels', 'Uploaded'],
    datasets.map((d) => h('tr', {},
      h('td', {}, link(`#/datasets/${d.id}`, d.name)),
      h('td', { text: d.modality }),
      h('td', { class: 'num', text: fmt.int(d.num_examples) }),
      h('td', { text: (d.labels || []).join(', ') }),
      h('td', { text: fmt.date(d.created_at) }))),
    'No datasets yet: upload one above.');
}

/** The jobs on one dataset, paged like the job list. */
export function datasetJobs(slot, datasetId, signal) {
  fill(slot, `/v1/jobs?dataset_id=${encodeURIComponent(datasetId)}`, 'jobs', signal,
    (jobs) => jobRows(jobs, 'None yet.'));
}

export function jobRows(jobs, empty = 'No jobs yet: open a dataset and start one.') {
  return table(['Job', 'Status', 'Stage', 'Backbone', 'Started', 'Model'],
    jobs.map((j) => h('tr', {},
      h('td', {}, link(`#/jobs/${j.id}`, fmt.shortId(j.id))),
      h('td', {}, statusBadge(j.status)),
      h('td', { text: fmt.words(j.stage) || '—' }),
      h('td', { text: j.backbone }),
      h('td', { text: fmt.date(j.started_at || j.created_at) }),
      h('td', {}, j.model_id ? link(`#/models/${j.model_id}`, fmt.shortId(j.model_id)) : '—'))),
    empty);
}

/** A model's headline held-out figure: accuracy, R² (regression) or micro-F1 (multi-label). */
function headline(m) {
  if (m.task === 'regression') return `R² ${fmt.num(m.r2)}`;
  if (m.task === 'multilabel') return `micro-F1 ${fmt.num(m.micro_f1)}`;
  return fmt.pct(m.accuracy);
}

function modelRows(models) {
  return table(['Model', 'Modality', 'Backbone', 'Held-out score#', 'Macro-F1#', 'Labels', 'Created'],
    models.map((m) => h('tr', {},
      h('td', {}, link(`#/models/${m.id}`, fmt.shortId(m.id))),
      h('td', { text: m.task && m.task !== 'classification' ? `${m.modality}, ${m.task}` : m.modality }),
      h('td', { text: m.backbone }),
      h('td', { class: 'num', text: headline(m.metrics || {}) }),
      h('td', { class: 'num', text: fmt.num(m.metrics && m.metrics.macro_f1) }),
      h('td', { text: (m.labels || []).join(', ') }),
      h('td', { text: fmt.date(m.created_at) }))),
    'No models yet: they appear here when a job succeeds.');
}

export function datasetsPage(view, { signal, navigate }) {
  const list = h('div', { id: 'dataset-list' });
  replace(view,
    h('h1', { tabindex: '-1', text: 'Datasets' }),
    h('p', { class: 'lead', text: 'Upload a small labelled dataset, train a classifier on it by transfer learning, then try it.' }),
    card('Upload a dataset', uploadWidget((dataset) => navigate(`#/datasets/${dataset.id}`))),
    card('Your datasets', list));
  fill(list, '/v1/datasets', 'your datasets', signal, datasetRows);
}

export function jobsPage(view, { signal }) {
  const list = h('div', { id: 'job-list' });
  replace(view, h('h1', { tabindex: '-1', text: 'Jobs' }), card(null, list));
  fill(list, '/v1/jobs', 'the jobs', signal, (jobs) => jobRows(jobs));
}

export function modelsPage(view, { signal }) {
  const list = h('div', { id: 'model-list' });
  replace(view, h('h1', { tabindex: '-1', text: 'Models' }), card(null, list));
  fill(list, '/v1/models', 'the models', signal, modelRows);
}
