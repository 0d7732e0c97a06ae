// The upload widget: drop a file or pick one (keyboard: the "Choose a file" button), a
// progress bar while it travels, and the API's error in words when it is refused.

import { h, replace, errorBox } from '../dom.js';
import { uploadDataset } from '../api.js';

const ACCEPT = '.csv,.jsonl,.ndjson,.zip,text/csv,application/zip';

/** Builds the widget; `onUploaded(dataset)` runs after a successful upload. */
export function uploadWidget(onUploaded) {
  const input = h('input', { type: 'file', id: 'dataset-file', accept: ACCEPT, class: 'visually-hidden', tabindex: '-1' });
  const nameInput = h('input', { type: 'text', id: 'dataset-name', name: 'name', maxlength: '200', placeholder: 'defaults to the file name', autocomplete: 'off' });
  const progress = h('progress', { id: 'upload-progress', max: '100', value: '0', 'aria-label': 'Upload progress' });
  const progressText = h('span', { class: 'progress-text', 'aria-live': 'polite' });
  const progressRow = h('div', { class: 'progress-row', hidden: true }, progress, progressText);
  const message = h('div', { id: 'upload-message' });
  const pick = h('button', { type: 'button', class: 'button', id: 'pick-file', text: 'Choose a file…' });
  const zone = h('div', { class: 'dropzone', id: 'dropzone' },
    h('p', { class: 'dropzone-title', text: 'Drop a CSV, JSONL or ZIP file here' }),
    h('p', { class: 'muted' }, 'or ', pick),
    h('p', { class: 'hint' },
      'Text: CSV with ', h('code', { text: 'text' }), ' and ', h('code', { text: 'label' }),
      ' columns, or JSONL with ', h('code', { text: '{"text","label"}' }), ' per line. ',
      'Images: a ZIP with one folder per label, or images beside a ', h('code', { text: 'labels.csv' }), '.'),
    input);

  let busy = false;
  async function send(file) {
    if (busy || !file) return;
    busy = true;
    zone.classList.add('is-busy');
    pick.disabled = true;
    replace(message);
    progressRow.hidden = false;
    progress.value = 0;
    progressText.textContent = `Uploading ${file.name}…`;
    try {
      const dataset = await uploadDataset(file, nameInput.value.trim(), (f) => {
        progress.value = Math.round(f * 100);
        progressText.textContent = f < 1 ? `Uploading ${file.name}: ${Math.round(f * 100)}%` : 'Checking the data…';
      });
      progressText.textContent = `Uploaded ${file.name}.`;
      onUploaded(dataset);
    } catch (err) {
      progressRow.hidden = true;
      replace(message, errorBox(err, `The server refused ${file.name}`));
    } finally {
      busy = false;
      zone.classList.remove('is-busy');
      pick.disabled = false;
      input.value = '';
    }
  }

  pick.addEventListener('click', () => input.click());
  input.addEventListener('change', () => send(input.files[0]));
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    zone.classList.add('is-over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('is-over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('is-over');
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) send(file);
  });

  return h('div', { class: 'upload' },
    h('div', { class: 'field' }, h('label', { for: 'dataset-name', text: 'Name (optional)' }), nameInput),
    zone, progressRow, message);
}
