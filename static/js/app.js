// The app shell: hash routes to pages, the API key control (kept in localStorage and sent
// by api.js on every request), and focus management so keyboard users land on each new
// page's heading.

import { h, replace, errorBox } from './dom.js';
import { getApiKey, setApiKey } from './api.js';
import { datasetsPage, jobsPage, modelsPage } from './pages/lists.js';
import { datasetPage } from './pages/dataset.js';
import { jobPage } from './pages/job.js';
import { modelPage } from './pages/model.js';

const ROUTES = [
  [/^#?\/?$/, datasetsPage, 'datasets'],
  [/^#\/datasets\/?$/, datasetsPage, 'datasets'],
  [/^#\/datasets\/([^/]+)$/, datasetPage, 'datasets'],
  [/^#\/jobs\/?$/, jobsPage, 'jobs'],
  [/^#\/jobs\/([^/]+)$/, jobPage, 'jobs'],
  [/^#\/models\/?$/, modelsPage, 'models'],
  [/^#\/models\/([^/]+)$/, modelPage, 'models'],
];

const view = document.getElementById('view');
let controller = null;

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function notFound(target) {
  replace(target, h('h1', { tabindex: '-1', text: 'Not found' }),
    h('p', {}, 'No page here. ', h('a', { href: '#/datasets', text: 'Go to the datasets' }), '.'));
}

async function route() {
  if (controller) controller.abort();
  controller = new AbortController();
  const hash = location.hash || '#/';
  const match = ROUTES.map(([re, page, section]) => [re.exec(hash), page, section]).find(([m]) => m);
  document.title = 'Warmstart';
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (match && a.dataset.nav === match[2]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  try {
    if (!match) notFound(view);
    else await match[1](view, { params: match[0].slice(1).map(decodeURIComponent), signal: controller.signal, navigate });
  } catch (err) {
    if (err.name !== 'AbortError') replace(view, errorBox(err, 'This page failed to load'));
  }
  const heading = view.querySelector('h1');
  if (heading && document.activeElement && !view.contains(document.activeElement)) heading.focus({ preventScroll: true });
}

function keyControl() {
  const details = document.getElementById('api-key');
  const input = document.getElementById('api-key-input');
  const state = document.getElementById('api-key-state');
  const form = document.getElementById('api-key-form');
  const show = () => {
    const key = getApiKey();
    state.textContent = key ? 'set' : 'not set';
    state.className = key ? 'pill pill-ok' : 'pill';
    input.value = key;
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    setApiKey(input.value);
    details.open = false;
    route();
  });
  document.getElementById('api-key-clear').addEventListener('click', () => {
    setApiKey('');
    details.open = false;
    route();
  });
  // The form floats over the page: Escape or a click elsewhere closes it.
  details.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && details.open) {
      details.open = false;
      details.querySelector('summary').focus();
    }
  });
  document.addEventListener('click', (e) => {
    if (details.open && !details.contains(e.target)) details.open = false;
  });
  window.addEventListener('apikeychange', show);
  // A 401 anywhere opens the key form so the fix is one step away.
  window.addEventListener('apiunauthorized', () => {
    details.open = true;
  });
  show();
}

window.addEventListener('hashchange', route);
keyControl();
route();
