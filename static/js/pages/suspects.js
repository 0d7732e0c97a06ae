// "Labels worth a second look": the examples whose given label the model finds least
// likely on held-out predictions (GET /v1/datasets/{id}/suspects), the first places to
// look for labelling mistakes.

import { h, replace, card, fmt, errorBox, isAbort } from '../dom.js';
import { get } from '../api.js';

function table(list) {
  return h('div', { class: 'table-scroll' }, h('table', { class: 'data-table', id: 'suspects-table' },
    h('thead', {}, h('tr', {}, ['#', 'Example', 'Given label', 'Model prefers'].map((t, i) => h('th', { scope: 'col', class: i === 0 ? 'num' : null, text: t })))),
    h('tbody', {}, list.map((s) => h('tr', {},
      h('td', { class: 'num', text: String(s.index + 1) }),
      h('td', { class: 'suspect-example', text: s.text ?? s.file ?? '—' }),
      h('td', {}, h('strong', { text: s.given_label }), ` (${fmt.pct(s.given_probability)})`),
      h('td', {}, h('strong', { text: s.suggested_label }), ` (${fmt.pct(s.suggested_probability)})`))))));
}

/** The card; fills itself from the API when the model counts any doubtful labels. */
export function suspectsCard(model, signal) {
  const count = model.metrics && model.metrics.suspects;
  if (typeof count !== 'number') return null;
  const body = h('div', { id: 'suspects' });
  const out = card('Labels worth a second look', body);
  if (count === 0) {
    replace(body, h('p', { class: 'muted', text: 'None: no given label looks doubtful on held-out predictions.' }));
    return out;
  }
  if (!model.dataset_id) {
    replace(body, h('p', { text: `${count} example(s) of the training data carry a label the model doubts; the dataset is not on this server.` }));
    return out;
  }
  replace(body, h('p', { class: 'muted', text: 'Loading…' }));
  const path = `/v1/datasets/${encodeURIComponent(model.dataset_id)}/suspects?model_id=${encodeURIComponent(model.id)}`;
  get(path, { signal }).then((res) => {
    replace(body,
      h('p', {}, `Examples whose given label the model finds least likely — judged on ${res.method}. Check them for labelling mistakes.`),
      table(res.data || []));
  }, (err) => {
    if (!isAbort(err)) replace(body, errorBox(err, 'Could not load the doubtful labels'));
  });
  return out;
}
