// "Try it": a text box for text models, an image picker with previews for image models;
// the answer is each input's top-k labels with score bars (classification), its value and
// interval (regression), or its label set with every label's score (multi-label).

import { h, replace, card, errorBox, fmt } from '../dom.js';
import { predictTexts, predictImages } from '../api.js';
import { scoreBars } from '../charts.js';

const MAX_INPUTS = 256;

/** Labels to show per input: up to 5 for classification; the task's own shape otherwise. */
function topK(model) {
  return model.task && model.task !== 'classification' ? undefined : Math.min(5, model.labels.length);
}

/** The answer for one input, in the shape of the model's task. */
function answer(p) {
  if (typeof p.value === 'number') {
    return [
      h('p', { class: 'prediction-label' }, 'Predicted value: ', h('strong', { class: 'predicted-value', text: fmt.num(p.value) })),
      p.interval ? h('p', { class: 'hint prediction-interval', text: `90% interval: ${fmt.num(p.interval[0])} to ${fmt.num(p.interval[1])}` }) : null,
    ];
  }
  if (Array.isArray(p.labels)) {
    return [
      h('p', { class: 'prediction-label' }, 'Predicted labels: ', h('strong', { class: 'predicted-labels', text: p.labels.length ? p.labels.join(', ') : 'none above its threshold' })),
      scoreBars(p.scores || []),
    ];
  }
  return [
    h('p', { class: 'prediction-label' }, 'Predicted: ', h('strong', { class: 'predicted-label', text: p.label })),
    scoreBars(p.top_k || [{ label: p.label, score: p.score }]),
  ];
}

function predictionView(prediction, subject, kind) {
  return h('li', { class: `prediction prediction-${kind}` },
    subject,
    h('div', { class: 'prediction-body' }, answer(prediction)));
}

function textPanel(model, results, run) {
  const box = h('textarea', { id: 'try-text', rows: '4', 'aria-describedby': 'try-text-hint', placeholder: 'Type a sentence…' });
  const button = h('button', { type: 'submit', class: 'button button-primary', id: 'try-predict', text: 'Predict' });
  const form = h('form', { class: 'try-form' },
    h('label', { for: 'try-text', text: 'Text to predict for' }),
    box,
    h('p', { class: 'hint', id: 'try-text-hint', text: 'One text per line. Ctrl+Enter predicts.' }),
    h('div', { class: 'actions' }, button));
  const submit = () => {
    const inputs = box.value.split('\n').map((s) => s.trim()).filter(Boolean).slice(0, MAX_INPUTS);
    if (!inputs.length) {
      replace(results, errorBox({ message: 'Type some text first.' }, 'Nothing to predict'));
      return;
    }
    run(button, () => predictTexts(model.id, inputs, topK(model)),
      (preds) => preds.map((p, i) => predictionView(p, h('blockquote', { class: 'prediction-input', text: inputs[i] }), 'text')));
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
  });
  box.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      submit();
    }
  });
  return form;
}

function imagePanel(model, results, run) {
  const input = h('input', { type: 'file', id: 'try-image', accept: 'image/jpeg,image/png,image/webp', multiple: true });
  const previews = h('ul', { class: 'previews', id: 'try-previews' });
  const button = h('button', { type: 'submit', class: 'button button-primary', id: 'try-predict', text: 'Predict', disabled: true });
  let urls = [];
  const thumb = (file, i) => h('img', { src: urls[i], alt: file.name, class: 'thumb' });
  input.addEventListener('change', () => {
    urls.forEach((u) => URL.revokeObjectURL(u));
    const files = [...input.files].slice(0, MAX_INPUTS);
    urls = files.map((f) => URL.createObjectURL(f));
    replace(previews, files.map((f, i) => h('li', {}, thumb(f, i), h('span', { class: 'hint', text: f.name }))));
    button.disabled = files.length === 0;
    replace(results);
  });
  const form = h('form', { class: 'try-form' },
    h('label', { for: 'try-image', text: 'Images to predict for (JPEG, PNG or WebP)' }),
    input, previews,
    h('div', { class: 'actions' }, button));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const files = [...input.files].slice(0, MAX_INPUTS);
    if (!files.length) return;
    run(button, () => predictImages(model.id, files, topK(model)),
      (preds) => preds.map((p, i) => predictionView(p, h('figure', { class: 'prediction-input' }, thumb(files[i], i)), 'image')));
  });
  return form;
}

export function tryIt(model) {
  const results = h('div', { id: 'try-results', 'aria-live': 'polite' });
  const run = async (button, call, render) => {
    button.disabled = true;
    replace(results, h('p', { class: 'muted', text: 'Predicting…' }));
    try {
      replace(results, h('ol', { class: 'predictions' }, render(await call())));
    } catch (err) {
      replace(results, errorBox(err, 'Prediction failed'));
    } finally {
      button.disabled = false;
    }
  };
  const panel = model.modality === 'image' ? imagePanel(model, results, run) : textPanel(model, results, run);
  return card('Try it', panel, results);
}
