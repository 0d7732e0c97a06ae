// One job, live: status, stage and progress follow the job's SSE event stream (read with
// fetch so the API key is sent), loss and accuracy curves grow per epoch, the cancel
// button stops it, a failed job shows its error, and the service's choices are listed.

import { h, replace, card, fmt, errorBox, statusBadge, facts, isAbort } from '../dom.js';
import { get, post, streamJobEvents } from '../api.js';
import { lineChart } from '../charts.js';

const STAGES = ['preparing', 'extracting_features', 'training_head', 'finetuning', 'evaluating'];
const STAGE_NAMES = {
  preparing: 'Preparing data',
  extracting_features: 'Extracting features',
  training_head: 'Training the head',
  finetuning: 'Fine-tuning',
  evaluating: 'Evaluating',
};
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The page's state and the slots it redraws. */
class JobView {
  constructor(view, id, signal) {
    this.id = id;
    this.signal = signal;
    this.job = null;
    this.epochs = [];
    this.log = [];
    this.eventStages = new Set(); // stages the event history has shown so far
    this.refreshTimer = null;
    this.chartFrame = null;
    this.segment = null; // "fold 2", "final fit", or null (holdout)
    this.slots = {
      status: h('span', { id: 'job-status', role: 'status', 'aria-live': 'polite' }),
      links: h('p', { class: 'crumbs' }),
      stepper: h('ol', { class: 'stepper', id: 'job-stages', 'aria-label': 'Stages' }),
      progress: h('progress', { id: 'job-progress', max: '1', value: '0', 'aria-labelledby': 'job-progress-text' }),
      progressText: h('p', { id: 'job-progress-text', class: 'progress-text' }),
      cancel: h('button', { type: 'button', class: 'button button-danger', id: 'cancel-job', text: 'Cancel job', hidden: true }),
      actionMessage: h('div'),
      error: h('div', { id: 'job-error' }),
      result: h('div', { id: 'job-result' }),
      charts: h('div', { class: 'charts', id: 'job-charts' }),
      choices: h('div', { id: 'job-choices' }),
      events: h('ol', { class: 'event-log', id: 'job-events', 'aria-live': 'off' }),
      stream: h('p', { class: 'hint', id: 'job-stream' }),
    };
    this.slots.cancel.addEventListener('click', () => this.cancel());
    replace(view,
      this.slots.links,
      h('div', { class: 'title-row' }, h('h1', { tabindex: '-1', text: `Job ${fmt.shortId(id)}` }), this.slots.status),
      this.slots.error,
      card('Progress', this.slots.stepper,
        h('div', { class: 'progress-row' }, this.slots.progress, this.slots.cancel),
        this.slots.progressText, this.slots.actionMessage, this.slots.stream),
      this.slots.result,
      card('Training curves', this.slots.charts),
      card('Settings: the choice of defaults', this.slots.choices),
      card('Events', this.slots.events));
    this.renderCharts();
  }

  get terminal() {
    return this.job && TERMINAL.has(this.job.status);
  }

  setJob(job) {
    this.job = job;
    const s = this.slots;
    replace(s.status, statusBadge(job.status));
    replace(s.links, h('a', { href: '#/jobs', text: 'Jobs' }), ' / ',
      h('a', { href: `#/datasets/${job.dataset_id}`, text: 'dataset' }), ` · backbone ${job.backbone}`);
    this.renderStepper();
    this.renderProgress();
    s.cancel.hidden = this.terminal;
    s.cancel.disabled = this.terminal;
    replace(s.error, job.status === 'failed' && job.error
      ? errorBox({ code: job.error.code, message: job.error.message }, 'The job failed') : null);
    this.renderResult();
    this.renderChoices();
  }

  renderStepper() {
    const { job } = this;
    const current = job.status === 'succeeded' ? STAGES.length : STAGES.indexOf(job.stage);
    // A stage is skipped (fine-tuning with finetune_epochs = 0) when the events moved past it.
    const skipped = (i) => !this.eventStages.has(STAGES[i]) && STAGES.slice(i + 1).some((s) => this.eventStages.has(s));
    replace(this.slots.stepper, STAGES.map((stage, i) => {
      let state = 'todo';
      if (i < current) state = skipped(i) ? 'skipped' : 'done';
      else if (i === current) state = job.status === 'running' ? 'active' : job.status === 'queued' ? 'todo' : 'stopped';
      return h('li', { class: `step step-${state}`, 'aria-current': state === 'active' ? 'step' : null },
        h('span', { class: 'step-name', text: STAGE_NAMES[stage] }),
        h('span', { class: 'step-state', text: state === 'todo' ? '' : state }));
    }));
  }

  renderProgress() {
    const { job } = this;
    const p = job.progress || {};
    const s = this.slots;
    let fraction = typeof p.fraction === 'number' ? p.fraction : 0;
    let text;
    if (job.status === 'queued') text = 'Waiting for a worker…';
    else if (job.status === 'running') {
      text = STAGE_NAMES[job.stage] || 'Starting';
      const folds = job.config && job.config.validation && job.config.validation.folds;
      if (this.segment && this.segment.startsWith('fold') && folds) text = `${fmt.words(this.segment)} of ${folds} · ${text}`;
      else if (this.segment === 'final fit') text = `Final fit on all the data · ${text}`;
      if (p.epochs > 0) text += ` · epoch ${p.epoch} of ${p.epochs}`;
      else if (fraction > 0) text += ` · ${fmt.pct(fraction, 0)}`;
    } else if (job.status === 'succeeded') {
      fraction = 1;
      text = `Succeeded${job.finished_at && job.started_at ? ` in ${duration(job.started_at, job.finished_at)}` : ''}.`;
    } else text = `${fmt.words(job.status)}${job.stage ? ` during ${STAGE_NAMES[job.stage] || job.stage}` : ''}.`;
    s.progress.value = Math.max(0, Math.min(1, fraction));
    s.progressText.textContent = text;
  }

  renderResult() {
    const { job } = this;
    if (job.status !== 'succeeded' || !job.model_id) return replace(this.slots.result);
    const m = job.metrics || {};
    replace(this.slots.result, card('Result',
      facts([
        ['Accuracy', fmt.pct(m.accuracy)],
        ['Macro-F1', fmt.num(m.macro_f1)],
        m.selected ? ['Kept', `${fmt.candidate(m.selected)}${m.selection_reason ? ` — ${m.selection_reason}` : ''}`] : null,
      ]),
      h('p', {}, h('a', { href: `#/models/${job.model_id}`, class: 'button button-primary', id: 'open-model', text: 'Open the model and try it →' }))));
  }

  renderChoices() {
    const config = this.job.config || {};
    const choices = config.choices || [];
    const given = Object.entries((this.job.request || {}).hyperparameters || {}).filter(([, v]) => v !== null && v !== undefined);
    if (!choices.length && !given.length) {
      return replace(this.slots.choices, h('p', { class: 'muted', text: 'Chosen when a worker starts the job.' }));
    }
    replace(this.slots.choices,
      given.length ? h('p', {}, 'Set in the request: ',
        given.map(([k, v], i) => [i ? ', ' : '', h('code', { text: `${k} = ${fmt.value(v)}` })])) : null,
      choices.length ? h('div', { class: 'table-scroll' }, h('table', { class: 'data-table choices' },
        h('caption', { text: 'Chosen by the service from the data' }),
        h('thead', {}, h('tr', {}, ['Setting', 'Value', 'Why'].map((t) => h('th', { scope: 'col', text: t })))),
        h('tbody', {}, choices.map((c) => h('tr', {},
          h('td', {}, h('code', { text: c.parameter })),
          h('td', { text: fmt.value(c.value) }),
          h('td', { text: c.reason })))))) : null);
  }

  /** Redraws the curves at most once per frame (a finished job replays many epochs at once). */
  scheduleCharts() {
    if (this.chartFrame) return;
    this.chartFrame = requestAnimationFrame(() => {
      this.chartFrame = null;
      this.renderCharts();
    });
  }

  renderCharts() {
    if (!this.epochs.length) {
      return replace(this.slots.charts, h('p', { class: 'muted', id: 'charts-empty', text: 'Curves appear here as each epoch ends.' }));
    }
    const points = (key) => this.epochs
      .filter((e) => typeof e.metrics[key] === 'number')
      .map((e) => ({ x: e.x, y: e.metrics[key], note: e.note, segment: e.segment }));
    // One shaded band per stage of each segment (a fold, the final fit, or the holdout
    // split); the first band of a segment is labelled with it.
    const bands = [];
    for (const e of this.epochs) {
      const band = bands[bands.length - 1];
      if (band && band.stage === e.stage && band.segment === e.segment) band.to = e.x;
      else {
        const first = !band || band.segment !== e.segment;
        const label = e.segment ? (first ? e.segment : '') : e.stage === 'training_head' ? 'head' : 'fine-tuning';
        bands.push({ stage: e.stage, segment: e.segment, from: e.x, to: e.x, label, cls: `band-${e.stage}` });
      }
    }
    const xLabel = bands.some((b) => b.segment)
      ? 'round (per fold, then the final fit on all data: head rounds — the regularisation path, strong to weak — then fine-tuning epochs)'
      : 'round (head rounds — the regularisation path, strong to weak — then fine-tuning epochs)';
    replace(this.slots.charts,
      lineChart({ title: 'Loss', bands, xLabel, series: [
        { name: 'training loss', cls: 's-train', points: points('train_loss') },
        { name: 'validation loss', cls: 's-val', points: points('val_loss') }] }),
      lineChart({ title: 'Accuracy', bands, xLabel, yRange: [0, 1], yFormat: (v) => fmt.pct(v, 0), series: [
        { name: 'training accuracy', cls: 's-train', points: points('train_accuracy') },
        { name: 'validation accuracy', cls: 's-val', points: points('val_accuracy') }] }));
  }

  onEvent(e) {
    if (e.kind === 'started' || e.kind === 'requeued') {
      this.epochs = []; // a new attempt starts over
      this.segment = null;
    }
    if (e.stage) this.eventStages.add(e.stage);
    // Stage and status move with the events at once; the job is re-read for the rest.
    if (this.job && !this.terminal && (e.kind === 'stage' || e.kind === 'started')) {
      if (e.stage) this.job.stage = e.stage;
      if (e.kind === 'started') this.job.status = 'running';
      this.job.progress = { epoch: 0, epochs: 0, fraction: 0 };
      this.setJob(this.job);
    } else if (this.job) this.renderStepper();
    if (e.kind === 'epoch') {
      const m = e.metrics || {};
      const segment = m.fold ? `fold ${m.fold}` : m.final ? 'final fit' : null;
      const where = m.head_c !== undefined ? `head C = ${m.head_c}`
        : m.head_epoch ? `head epoch ${m.head_epoch}` : `fine-tuning epoch ${e.epoch}`;
      this.epochs.push({ x: this.epochs.length + 1, stage: e.stage, segment, metrics: m, note: segment ? `${segment}, ${where}` : where });
      if (segment !== this.segment) {
        this.segment = segment;
        if (this.job) this.renderProgress();
      }
      this.scheduleCharts();
    } else {
      const text = e.message || fmt.words(e.kind);
      this.slots.events.append(h('li', { class: `ev ev-${e.kind}` },
        h('time', { datetime: e.at, text: new Date(e.at).toLocaleTimeString('en-GB') }), ' ',
        h('span', { class: 'ev-kind', text: e.kind }), ' ', text));
      this.slots.events.scrollTop = this.slots.events.scrollHeight;
    }
    this.scheduleRefresh(TERMINAL.has(e.kind) ? 0 : 250);
  }

  /** Re-reads the job (status, stage, progress) soon after an event; coalesces bursts. */
  scheduleRefresh(delay) {
    if (this.refreshTimer !== null && delay > 0) return;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      this.refresh();
    }, delay);
  }

  async refresh() {
    try {
      this.setJob(await get(`/v1/jobs/${encodeURIComponent(this.id)}`, { signal: this.signal }));
    } catch (err) {
      if (!isAbort(err)) replace(this.slots.actionMessage, errorBox(err, 'Could not refresh the job'));
    }
  }

  /** Follows the event stream until the job ends, resuming after a dropped connection. */
  async follow() {
    let last = null;
    let failures = 0;
    while (!this.signal.aborted) {
      try {
        this.slots.stream.textContent = this.terminal ? '' : 'Live: following the job’s event stream.';
        last = await streamJobEvents(this.id, { signal: this.signal, lastId: last, onEvent: (e) => this.onEvent(e) });
        failures = 0;
      } catch (err) {
        if (isAbort(err)) return;
        failures += 1;
        this.slots.stream.textContent = `Live updates interrupted (${err.message}); retrying…`;
      }
      await this.refresh();
      if (this.terminal) {
        this.slots.stream.textContent = '';
        return;
      }
      await sleep(Math.min(500 * 2 ** failures, 10_000));
    }
  }

  /** Progress inside a stage (feature extraction, say) is not an event: poll it gently. */
  async pollProgress() {
    while (!this.signal.aborted && !this.terminal) {
      await sleep(1500);
      if (!this.signal.aborted && !this.terminal) await this.refresh();
    }
  }

  async cancel() {
    this.slots.cancel.disabled = true;
    replace(this.slots.actionMessage);
    try {
      this.setJob(await post(`/v1/jobs/${encodeURIComponent(this.id)}/cancel`));
    } catch (err) {
      replace(this.slots.actionMessage, errorBox(err, 'The job was not cancelled'));
      this.slots.cancel.disabled = this.terminal;
    }
  }
}

function duration(from, to) {
  const s = (new Date(to) - new Date(from)) / 1000;
  return s < 90 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

export async function jobPage(view, { params, signal }) {
  const page = new JobView(view, params[0], signal);
  document.title = `Job ${fmt.shortId(params[0])} · Warmstart`;
  try {
    page.setJob(await get(`/v1/jobs/${encodeURIComponent(params[0])}`, { signal }));
  } catch (err) {
    if (!isAbort(err)) replace(view, h('h1', { tabindex: '-1', text: 'Job' }), errorBox(err, 'Could not load the job'));
    return;
  }
  page.follow();
  page.pollProgress();
}
