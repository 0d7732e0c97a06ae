// The web UI in a real browser: starts the real server (real MiniLM backbone), then in
// headless chromium uploads a dataset through the page, starts a job, follows its live
// progress to `succeeded`, tries the model, downloads it, cancels a second job, shows a
// failed job's error, pages a long list, opens the API docs page, checks phone width and
// keyboard access, and fails on any console error. Screenshots of each page go to
// target/browser-artifacts/ (or $BROWSER_ARTIFACTS).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, startKeyProxy, launchBrowser, createApiKey, datasetCsv } from './lib.mjs';
import { colourDatasetZip, colourImage } from './images.mjs';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const artifacts = path.resolve(process.env.BROWSER_ARTIFACTS || path.join(repo, 'target/browser-artifacts'));
const bin = process.env.WARMSTART_BIN || path.join(repo, 'target/release/warmstart');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const JOB_TIMEOUT = 300_000; // generous: liveness only, CI runners are slow

const t0 = Date.now();
const timings = [];
const screenshots = [];
const consoleErrors = [];
const expectedFailures = new Set(); // URLs the test makes fail on purpose
let page;

async function step(name, fn) {
  const start = Date.now();
  process.stdout.write(`• ${name} … `);
  await fn();
  const ms = Date.now() - start;
  timings.push([name, ms]);
  console.log(`ok (${(ms / 1000).toFixed(1)} s)`);
}

async function shot(name) {
  const file = path.join(artifacts, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  screenshots.push(file);
}

/** No horizontal scrolling at the current viewport width. */
async function assertNoOverflow(where) {
  const { scroll, width } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
  assert.ok(scroll <= width + 1, `${where}: the page is ${scroll}px wide in a ${width}px viewport (horizontal scrolling)`);
}

async function routeId(prefix) {
  await page.waitForFunction((p) => new RegExp(`^#/${p}/[0-9a-f-]{36}$`).test(location.hash), prefix, { timeout: 30_000 });
  return page.evaluate(() => location.hash.split('/')[2]);
}

let apiBase;
let apiHeaders = {};
/** A GET on the API from the test itself, to compare the page with what the API says. */
async function api(pathname) {
  const r = await fetch(`${apiBase}${pathname}`, { headers: apiHeaders });
  assert.ok(r.ok, `GET ${pathname}: ${r.status}`);
  return r.json();
}

async function main() {
  fs.rmSync(artifacts, { recursive: true, force: true });
  fs.mkdirSync(artifacts, { recursive: true });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'warmstart-browser-'));
  process.on('exit', () => fs.rmSync(dataDir, { recursive: true, force: true }));
  let server = null;
  let proxy = null;
  let browser = null;
  const sseRequests = [];
  const authHeaders = [];
  let recordAuth = false;
  try {
    const realKey = createApiKey(bin, dataDir);
    const apiKey = realKey || 'browser-test-key-0123456789abcdef';
    server = await startServer({ bin, repo, dataDir, logFile: path.join(artifacts, 'server.log') });
    // Without key support in the binary, a proxy in front of it demands the key instead.
    proxy = realKey ? null : await startKeyProxy(server.base, apiKey);
    const base = proxy ? proxy.base : server.base;
    apiBase = base;
    apiHeaders = { Authorization: `Bearer ${apiKey}` };
    console.log(realKey ? 'The server requires the API key made with `warmstart keys create`.'
      : 'The binary has no `keys` subcommand: a loopback proxy in front of it requires the API key.');
    browser = await launchBrowser(chromiumPath);
    const { csv, labels, count } = datasetCsv();
    page = browser.context.pages()[0] || (await browser.context.newPage());
    page.setDefaultTimeout(30_000);
    // Turn on file-chooser interception now: enabling it lazily races a quick key press.
    page.on('filechooser', () => {});
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const url = msg.location() && msg.location().url;
      if (url && expectedFailures.has(url)) return;
      consoleErrors.push(`${msg.text()}${url ? ` (${url})` : ''}`);
    });
    page.on('pageerror', (err) => consoleErrors.push(`uncaught: ${err.message}`));
    page.on('request', (req) => {
      const headers = req.headers();
      if (req.url().includes('/v1/') && recordAuth) authHeaders.push([req.url(), headers.authorization || null]);
      if (/\/v1\/jobs\/[^/]+\/events$/.test(req.url()) && (headers.accept || '').includes('text/event-stream')) sseRequests.push(req.url());
    });

    await step('home page: a server that wants a key says so in words and opens the key form', async () => {
      expectedFailures.add(`${base}/v1/datasets`); // the deliberate 401s
      await page.goto(`${base}/`);
      await page.getByRole('heading', { level: 1, name: 'Datasets' }).waitFor();
      await page.locator('#dataset-list .alert-error').filter({ hasText: 'requires an API key' }).waitFor();
      assert.ok(await page.locator('#api-key').evaluate((d) => d.open), 'a 401 opens the API key form');
      await shot('01-key-required');
    });

    await step('API key: saved in local storage, sent as a bearer token, kept across reloads', async () => {
      await page.locator('#api-key-input').fill(apiKey);
      const listed = page.waitForRequest((r) => r.url().endsWith('/v1/datasets') && r.method() === 'GET');
      await page.locator('#api-key-save').click();
      assert.equal((await listed).headers().authorization, `Bearer ${apiKey}`);
      assert.equal(await page.evaluate(() => localStorage.getItem('warmstart.apiKey')), apiKey);
      await page.locator('#dataset-list').getByText('No datasets yet').waitFor();
      await page.reload();
      await page.locator('#api-key-state').filter({ hasText: /^set$/ }).waitFor();
      assert.equal(await page.locator('#api-key-input').inputValue(), apiKey, 'the key survives a reload');
      await page.locator('#dataset-list').getByText('No datasets yet').waitFor();
      expectedFailures.delete(`${base}/v1/datasets`);
      recordAuth = true;
      await shot('02-home');
    });

    await step('keyboard: Tab reaches the file picker, Enter opens it; a bad file shows the API error in words', async () => {
      await page.locator('body').focus();
      let reached = false;
      for (let i = 0; i < 40 && !reached; i++) {
        await page.keyboard.press('Tab');
        reached = await page.evaluate(() => document.activeElement && document.activeElement.id === 'pick-file');
      }
      assert.ok(reached, 'the "Choose a file" button is reachable with Tab');
      const chooser = page.waitForEvent('filechooser');
      await page.keyboard.press('Enter');
      expectedFailures.add(`${base}/v1/datasets`);
      await (await chooser).setFiles({ name: 'bad.csv', mimeType: 'text/csv', buffer: Buffer.from('foo,bar\n1,2\n') });
      const alert = page.locator('#upload-message [role=alert]');
      await alert.waitFor();
      const text = await alert.innerText();
      assert.match(text, /header must contain a `text` and a `label` column/, text);
      assert.match(text, /missing_columns/, text);
      await shot('03-upload-error');
      expectedFailures.delete(`${base}/v1/datasets`);
    });

    let datasetId;
    await step('drag and drop a CSV: the summary with label bars appears', async () => {
      await page.locator('#dataset-name').fill('Support messages');
      const transfer = await page.evaluateHandle((text) => {
        const dt = new DataTransfer();
        dt.items.add(new File([text], 'support.csv', { type: 'text/csv' }));
        return dt;
      }, csv);
      await page.dispatchEvent('#dropzone', 'dragover', { dataTransfer: transfer });
      await page.dispatchEvent('#dropzone', 'drop', { dataTransfer: transfer });
      datasetId = await routeId('datasets');
      await page.locator('#dataset-title').filter({ hasText: 'Support messages' }).waitFor();
      assert.equal(await page.locator('#dataset-count').innerText(), String(count));
      const barLabels = await page.locator('.bars-counts .bar-label').allInnerTexts();
      assert.deepEqual([...barLabels].sort(), [...labels].sort());
      assert.deepEqual(await page.locator('.bars-counts .bar-value').allInnerTexts(), ['10', '10', '10']);
      await page.locator('#dataset-warnings').waitFor();
      await assertNoOverflow('dataset page');
      await shot('04-dataset');
    });

    let modelId;
    let jobId;
    let statuses = [];
    await step('start a job with the defaults; live status, stage, progress and curves reach succeeded', async () => {
      await page.locator('#start-job').click();
      jobId = await routeId('jobs');
      await page.locator('#job-status .badge').waitFor();
      // Record every status the badge shows, without reloading: proof it updates live.
      await page.evaluate(() => {
        const watch = (selector, list) => {
          const el = document.querySelector(selector);
          window[list] = [el.textContent];
          new MutationObserver(() => {
            if (window[list][window[list].length - 1] !== el.textContent) window[list].push(el.textContent);
          }).observe(el, { childList: true, subtree: true, characterData: true });
        };
        watch('#job-status', '__statuses');
        watch('#job-progress-text', '__progress');
      });
      await page.locator('#job-charts .chart path.line').first().waitFor({ timeout: JOB_TIMEOUT });
      await shot('05-job-live');
      await page.locator('#job-status').filter({ hasText: 'succeeded' }).waitFor({ timeout: JOB_TIMEOUT });
      statuses = await page.evaluate(() => window.__statuses);
      assert.ok(statuses.length >= 2 && statuses.at(-1) === 'succeeded', `statuses seen live: ${statuses.join(' → ')}`);
      assert.ok(sseRequests.some((u) => u.endsWith(`/v1/jobs/${jobId}/events`)), 'the page reads the SSE event stream');
      assert.equal(await page.locator('#job-progress').evaluate((p) => p.value), 1);
      assert.equal(await page.locator('#job-charts figure').count(), 2, 'a loss chart and an accuracy chart');
      for (const series of ['s-train', 's-val']) {
        const n = Number(await page.locator(`#job-charts figure:first-child path.${series}`).getAttribute('data-points'));
        assert.ok(n >= 2, `loss curve ${series} has ${n} points`);
      }
      const job = await api(`/v1/jobs/${jobId}`);
      if (job.config.validation.strategy === 'kfold') {
        const progress = await page.evaluate(() => window.__progress);
        assert.ok(progress.some((t) => /^Fold \d+ of \d+ · /.test(t)), `the live progress names the fold: ${progress.join(' | ')}`);
      }
      await page.locator('#job-choices td code', { hasText: 'backbone' }).first().waitFor();
      await page.locator('#job-events .ev-succeeded').waitFor();
      assert.equal(await page.locator('#job-stages .step-done').count() >= 3, true);
      await assertNoOverflow('job page');
      await shot('06-job-succeeded');
      await page.locator('#open-model').click();
      modelId = await routeId('models');
    });

    await step('model page: metrics, baseline vs transfer, folds, per-class table, confusion heat map, download', async () => {
      await page.locator('#metric-accuracy').waitFor();
      // Each section the API reports is shown.
      const { metrics } = await api(`/v1/models/${modelId}`);
      if (metrics.baseline) {
        assert.equal(await page.locator('#baseline-table tbody tr').count(), 3, 'accuracy, macro-F1 and log loss vs the baseline');
        await page.locator('#transfer-gain').waitFor();
      }
      if (metrics.folds) assert.equal(await page.locator('#folds tbody tr').count(), metrics.folds.length, 'a row per fold');
      if (metrics.suspects > 0) {
        await page.locator('#suspects-table tbody tr').first().waitFor();
        const { data } = await api(`/v1/datasets/${datasetId}/suspects?model_id=${modelId}`);
        assert.equal(await page.locator('#suspects-table tbody tr').count(), data.length, 'a row per doubtful label');
        assert.equal(await page.locator('#suspects-table tbody tr td.suspect-example').first().innerText(), data[0].text);
      } else if (metrics.suspects === 0) {
        await page.locator('#suspects').getByText('None').waitFor();
      }
      assert.equal(await page.locator('#candidates tbody tr').count(), Object.keys(metrics.candidates).length);
      assert.match(await page.locator('#metric-accuracy .tile-value').innerText(), /^\d+\.\d%$/);
      assert.equal(await page.locator('#per-class tbody tr').count(), labels.length);
      assert.equal(await page.locator('.heatmap tbody tr').count(), labels.length);
      assert.equal(await page.locator('.heatmap tbody td').count(), labels.length ** 2);
      const download = page.waitForEvent('download');
      await page.locator('#download-model').click();
      const file = await download;
      assert.match(file.suggestedFilename(), new RegExp(`^warmstart-model-${modelId}\\.zip$`));
      const bytes = fs.readFileSync(await file.path());
      assert.equal(bytes.subarray(0, 2).toString('latin1'), 'PK', 'the download is a ZIP archive');
      assert.ok(bytes.includes(Buffer.from('model.json')), 'the archive holds model.json');
      await assertNoOverflow('model page');
      await shot('07-model');
    });

    let predicted;
    await step('try it: a typed sentence gets a label from the dataset with score bars', async () => {
      await page.locator('#try-text').fill('Where is my parcel? The delivery is three days late.');
      await page.locator('#try-predict').click();
      const label = page.locator('#try-results .predicted-label');
      await label.waitFor();
      predicted = await label.innerText();
      assert.ok(labels.includes(predicted), `predicted ${predicted}, not one of ${labels}`);
      assert.equal(await page.locator('#try-results .bars-scores .bar-row').count(), labels.length);
      await page.locator('#try-results').scrollIntoViewIfNeeded();
      await shot('08-try-it');
    });

    await step('the form starts a long job; Cancel stops it while running', async () => {
      await page.goto(`${base}/#/datasets/${datasetId}`);
      await page.locator('#head_epochs').fill('10000');
      await page.locator('#finetune_epochs').fill('1000');
      await page.locator('#start-job').click();
      await routeId('jobs');
      await page.locator('#job-choices').getByText('finetune_epochs = 1000').waitFor({ timeout: JOB_TIMEOUT });
      await page.locator('#job-status').filter({ hasText: 'running' }).waitFor({ timeout: JOB_TIMEOUT });
      const clicked = Date.now();
      await page.locator('#cancel-job').click();
      await page.locator('#job-status').filter({ hasText: 'cancelled' }).waitFor({ timeout: 60_000 });
      console.log(`\n  cancelled ${((Date.now() - clicked) / 1000).toFixed(1)} s after the click`);
      assert.ok(await page.locator('#cancel-job').isHidden(), 'no cancel button on a finished job');
      await shot('09-job-cancelled');
    });

    await step('images: ZIP upload, head-only job from the form, image picker with previews predicts', async () => {
      const images = colourDatasetZip(8);
      await page.goto(`${base}/#/datasets`);
      await page.locator('#dataset-file').setInputFiles({ name: 'colours.zip', mimeType: 'application/zip', buffer: images.zip });
      await routeId('datasets');
      await page.locator('#dataset-summary .pill', { hasText: 'image' }).waitFor();
      assert.equal(await page.locator('#dataset-count').innerText(), String(images.count));
      await shot('12-image-dataset');
      await page.locator('#finetune_epochs').fill('0');
      await page.locator('#start-job').click();
      await routeId('jobs');
      await page.locator('#job-status').filter({ hasText: 'succeeded' }).waitFor({ timeout: JOB_TIMEOUT });
      await page.locator('#job-stages .step-skipped', { hasText: 'Fine-tuning' }).waitFor();
      await shot('13-image-job');
      await page.locator('#open-model').click();
      await routeId('models');
      await page.locator('#try-image').setInputFiles([
        { name: 'red.png', mimeType: 'image/png', buffer: colourImage('red', 7) },
        { name: 'blue.png', mimeType: 'image/png', buffer: colourImage('blue', 7) },
      ]);
      assert.equal(await page.locator('#try-previews img').count(), 2, 'a preview per picked image');
      // The preview shows the picked image itself (64 px wide once decoded).
      await page.waitForFunction(() => [...document.querySelectorAll('#try-previews img')].every((img) => img.complete && img.naturalWidth === 64));
      await page.locator('#try-predict').click();
      await page.locator('#try-results .predicted-label').nth(1).waitFor();
      const got = await page.locator('#try-results .predicted-label').allInnerTexts();
      assert.deepEqual(got, ['red', 'blue'], `predictions in input order: ${got}`);
      await page.locator('#try-results').scrollIntoViewIfNeeded();
      await shot('14-image-try-it');
    });

    await step('regression: a numeric CSV, head-only job, scatter plot and kept candidate, try it answers a value with its interval', async () => {
      const levels = [['awful', -2], ['poor', -1], ['okay', 0], ['good', 1], ['superb', 2]];
      const nouns = ['meal', 'hotel', 'film', 'phone', 'flight', 'book'];
      const lines = ['text,label'];
      for (let i = 0; i < 30; i++) {
        const [word, value] = levels[i % 5];
        // Not whole numbers: at most 10 whole values would stay classes.
        lines.push(`"The ${nouns[i % 6]} was ${word}.",${value + (i % 3) * 0.25}`);
      }
      await page.goto(`${base}/#/datasets`);
      await page.locator('#dataset-file').setInputFiles({ name: 'ratings.csv', mimeType: 'text/csv', buffer: Buffer.from(`${lines.join('\n')}\n`) });
      const id = await routeId('datasets');
      assert.equal((await api(`/v1/datasets/${id}`)).task, 'regression');
      await page.locator('#finetune_epochs').fill('0');
      await page.locator('#start-job').click();
      await routeId('jobs');
      await page.locator('#job-status').filter({ hasText: 'succeeded' }).waitFor({ timeout: JOB_TIMEOUT });
      await page.locator('#open-model').click();
      await routeId('models');
      await page.locator('#regression-scatter circle').first().waitFor();
      assert.equal(await page.locator('#regression-scatter circle').count(), 30, 'a point per held-out example');
      await page.getByText('How it was chosen').waitFor();
      await page.locator('#try-text').fill('The hotel was superb.');
      await page.locator('#try-predict').click();
      const value = page.locator('#try-results .predicted-value');
      await value.waitFor();
      assert.ok(Number.isFinite(Number(await value.innerText())), `a number: ${await value.innerText()}`);
      await page.locator('#try-results .prediction-interval').waitFor();
      await assertNoOverflow('regression model page');
      await shot('14b-regression-model');
    });

    await step('a failed job shows its error message (stubbed API answers for this one job)', async () => {
      // The real server cannot be made to fail a job from outside, so this one job's two
      // answers are stubbed in the shape the API gives; everything else is real.
      const id = '00000000-0000-4000-8000-00000000fa11';
      const job = {
        id, dataset_id: datasetId, backbone: 'minilm-l6', status: 'failed', stage: 'finetuning',
        progress: { epoch: 2, epochs: 4, fraction: 0.5 }, metrics: {}, model_id: null,
        error: { code: 'training_failed', message: 'fine-tuning diverged: the loss became NaN; lower backbone_lr' },
        request: { hyperparameters: {} }, config: {}, created_at: new Date().toISOString(),
        started_at: new Date().toISOString(), finished_at: new Date().toISOString(),
      };
      const events = [['started', null, 'a worker started the job'], ['stage', 'preparing', 'splitting the data'],
        ['stage', 'extracting_features', 'running the frozen backbone'], ['stage', 'training_head', 'training the head'],
        ['stage', 'finetuning', 'fine-tuning'], ['failed', 'finetuning', job.error.message]]
        .map(([kind, stage, message], i) => ({ seq: i + 1, at: new Date().toISOString(), kind, stage, epoch: null, metrics: {}, message }));
      const sse = events.map((e) => `id: ${e.seq}\nevent: ${e.kind}\ndata: ${JSON.stringify(e)}\n\n`).join('');
      await page.route(`**/v1/jobs/${id}`, (r) => r.fulfill({ json: job }));
      await page.route(`**/v1/jobs/${id}/events`, (r) => r.fulfill({ status: 200, contentType: 'text/event-stream', body: sse }));
      await page.goto(`${base}/#/jobs/${id}`);
      const alert = page.locator('#job-error [role=alert]');
      await alert.waitFor();
      assert.match(await alert.innerText(), /the loss became NaN; lower backbone_lr/);
      assert.match(await alert.innerText(), /training_failed/);
      await page.locator('#job-status').filter({ hasText: 'failed' }).waitFor();
      await page.locator('#job-stages .step-stopped', { hasText: 'Fine-tuning' }).waitFor();
      assert.equal(await page.locator('#job-stages .step-done').count(), 3, 'the stages before the failure are done');
      assert.ok(await page.locator('#cancel-job').isHidden(), 'no cancel button on a failed job');
      await shot('10-job-failed');
      await page.unrouteAll();
    });

    await step('long lists page: "Show more" fetches the next page (stubbed pages)', async () => {
      const model = (i) => ({
        id: `00000000-0000-4000-8000-0000000000${String(i).padStart(2, '0')}`, job_id: '', dataset_id: '',
        backbone: 'minilm-l6', modality: 'text', labels: ['a', 'b'], metrics: {}, created_at: new Date().toISOString(),
      });
      const first = Array.from({ length: 20 }, (_, i) => model(i));
      const second = [model(20), model(21)];
      const afters = [];
      await page.route('**/v1/models*', (r) => {
        const after = new URL(r.request().url()).searchParams.get('after');
        afters.push(after);
        const data = after ? second : first;
        r.fulfill({ json: { object: 'list', data, has_more: !after, first_id: data[0].id, last_id: data[data.length - 1].id } });
      });
      await page.goto(`${base}/#/models`);
      await page.locator('#model-list table').waitFor();
      assert.equal(await page.locator('#model-list tbody tr').count(), 20);
      await page.locator('#model-list button', { hasText: 'Show more' }).click();
      await page.waitForFunction(() => document.querySelectorAll('#model-list tbody tr').length === 22);
      assert.equal(await page.locator('#model-list button', { hasText: 'Show more' }).count(), 0, 'no more pages');
      assert.deepEqual(afters, [null, first[19].id]);
      await shot('15-models-paged');
      await page.unrouteAll();
    });

    await step('the API docs page: linked from the footer, rendered from /openapi.json, nothing fetched elsewhere', async () => {
      const outside = [];
      const onRequest = (r) => {
        if (!r.url().startsWith(base) && !r.url().startsWith('data:')) outside.push(r.url());
      };
      page.on('request', onRequest);
      await page.goto(`${base}/#/datasets`);
      await page.locator('footer a[href="/docs"]').click();
      await page.locator('#swagger-ui .opblock-tag', { hasText: 'datasets' }).first().waitFor();
      assert.ok(await page.locator('#swagger-ui .opblock').count() >= 20, 'every operation is shown');
      await page.waitForLoadState('networkidle');
      page.off('request', onRequest);
      assert.deepEqual(outside, [], 'the docs page fetched nothing from elsewhere');
      await shot('16-api-docs');
    });

    await step('phone width (390×844): no horizontal scrolling on each page', async () => {
      await page.setViewportSize({ width: 390, height: 844 });
      const pages = [
        ['datasets', '#/datasets', '#dataset-list table'],
        ['dataset', `#/datasets/${datasetId}`, '#dataset-title'],
        ['job', `#/jobs/${jobId}`, '#job-events .ev-succeeded'],
        ['model', `#/models/${modelId}`, '#per-class'],
        ['jobs', '#/jobs', '#job-list table'],
      ];
      for (const [name, hash, ready] of pages) {
        await page.goto(`${base}/${hash}`);
        await page.locator(ready).waitFor();
        await page.waitForLoadState('networkidle');
        await assertNoOverflow(`${name} page at phone width`);
        await shot(`11-phone-${name}`);
      }
      await page.setViewportSize({ width: 1280, height: 800 });
    });

    const keyless = authHeaders.filter(([, a]) => a !== `Bearer ${apiKey}`).map(([u]) => u);
    assert.deepEqual(keyless, [], 'every API request after the key was saved carried it');

    await step('Forget the key: requests go without it and the refusal is shown', async () => {
      await page.goto(`${base}/#/datasets`);
      await page.locator('#dataset-list table').waitFor();
      expectedFailures.add(`${base}/v1/datasets`);
      await page.locator('#api-key summary').click();
      const bare = page.waitForRequest((r) => r.url().endsWith('/v1/datasets'));
      await page.locator('#api-key-clear').click();
      assert.equal((await bare).headers().authorization, undefined);
      await page.locator('#dataset-list .alert-error').filter({ hasText: 'requires an API key' }).waitFor();
      assert.equal(await page.evaluate(() => localStorage.getItem('warmstart.apiKey')), null);
    });

    assert.deepEqual(consoleErrors, [], `console errors during the test:\n${consoleErrors.join('\n')}`);
    console.log(`\nPredicted "${predicted}" for the try-it sentence; statuses seen live: ${statuses.join(' → ')}`);
  } catch (err) {
    if (page) await page.screenshot({ path: path.join(artifacts, 'failure.png'), fullPage: true }).catch(() => {});
    if (consoleErrors.length) console.error(`console errors so far:\n${consoleErrors.join('\n')}`);
    throw err;
  } finally {
    if (browser) await browser.close();
    if (proxy) await proxy.close();
    if (server) await server.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

// A timeout's SIGTERM (or Ctrl-C) becomes an exit, so the server is reaped (lib.mjs).
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    console.error(`\ninterrupted by ${signal}`);
    process.exit(1);
  });
}

main().then(() => {
  console.log(`\nbrowser test passed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(`screenshots (${screenshots.length}) and server.log in ${artifacts}:`);
  for (const s of screenshots) console.log(`  ${path.relative(repo, s)}`);
}, (err) => {
  console.error(`\nFAILED: ${err && err.stack ? err.stack : err}`);
  console.error(`artefacts (screenshots, failure.png, server.log) in ${artifacts}`);
  process.exit(1);
});
