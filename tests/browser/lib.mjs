// Helpers of the browser test: start the real warmstart binary on a free loopback port
// with a fresh data folder, create an API key when the binary supports keys (or else put a
// key-checking proxy in front of it), and launch Debian's chromium headless through
// playwright-core.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Creates an API key with `warmstart keys create` when the binary has that subcommand.
 * Returns the key, or null when the binary has no key support (then the server runs
 * without keys). Any other failure throws: a key feature that exists must work here.
 */
export function createApiKey(bin, dataDir) {
  const run = spawnSync(bin, ['keys', 'create', '--name', 'browser-test', '--data-dir', dataDir], { encoding: 'utf8' });
  const out = `${run.stdout || ''}\n${run.stderr || ''}`;
  if (run.status !== 0) {
    if (/unrecognized subcommand|invalid subcommand|unexpected argument 'keys'|found argument 'keys'/i.test(out)) return null;
    throw new Error(`warmstart keys create failed (exit ${run.status}):\n${out}`);
  }
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const tokens = (run.stdout || '').split(/[\s"',:=]+/).filter((t) => t.length >= 20 && /^[A-Za-z0-9_.~+/-]+$/.test(t) && !uuid.test(t));
  if (!tokens.length) throw new Error(`cannot find the key in the output of warmstart keys create:\n${out}`);
  return tokens.sort((a, b) => b.length - a.length)[0];
}

/** Starts `warmstart serve`; resolves when /healthz answers. */
export async function startServer({ bin, repo, dataDir, logFile }) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const log = fs.openSync(logFile, 'w');
  const child = spawn(bin, [
    'serve',
    '--listen', `127.0.0.1:${port}`,
    '--data-dir', dataDir,
    '--models-dir', path.resolve(repo, process.env.WARMSTART_MODELS_DIR || 'models'),
    '--static-dir', path.join(repo, 'static'),
  ], { stdio: ['ignore', log, log], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' } });
  let exited = null;
  // Never outlive the test, however it ends (process.exit, a signal turned into exit).
  const reap = () => exited || child.kill('SIGKILL');
  process.on('exit', reap);
  child.on('exit', (code, signal) => {
    exited = { code, signal };
    process.off('exit', reap);
  });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited) throw new Error(`warmstart serve exited early (${JSON.stringify(exited)}); see ${logFile}`);
    try {
      const r = await fetch(`${base}/healthz`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`warmstart serve did not answer /healthz within 60 s; see ${logFile}`);
    }
    await sleep(100);
  }
  return {
    base,
    child,
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      for (let i = 0; i < 100 && !exited; i++) await sleep(100);
      if (!exited) child.kill('SIGKILL');
    },
  };
}

/**
 * For a binary without API keys: a loopback reverse proxy that answers /v1 requests
 * lacking `Authorization: Bearer <key>` with a 401 in the API's error shape and passes
 * everything else (streams included) to the real server, so the UI's key handling is
 * exercised all the same. Resolves to {base, close}.
 */
export async function startKeyProxy(target, key) {
  const upstream = new URL(target);
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/v1/') && req.headers.authorization !== `Bearer ${key}`) {
      res.writeHead(401, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'unauthorized', message: 'missing or wrong API key; send Authorization: Bearer <key>' } }));
      return;
    }
    const forward = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode, up.headers);
      up.pipe(res);
    });
    forward.on('error', (err) => {
      res.writeHead(502, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'proxy_error', message: String(err) } }));
    });
    req.pipe(forward);
    res.on('close', () => forward.destroy());
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    base: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(resolve);
    }),
  };
}

/** Launches chromium with a fresh profile (persistent context = its own user-data-dir). */
export async function launchBrowser(executablePath) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'warmstart-chromium-'));
  const removeProfile = () => fs.rmSync(profile, { recursive: true, force: true });
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 800 },
      acceptDownloads: true,
      timeout: 60_000,
    });
  } catch (err) {
    removeProfile();
    throw err;
  }
  // Registered after playwright's own exit handler, which kills chromium first.
  process.on('exit', removeProfile);
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      removeProfile();
      process.off('exit', removeProfile);
    },
  };
}

/** A small text dataset: 3 classes × 10 short texts, as CSV. */
export function datasetCsv() {
  const rows = {
    positive: ['I love this product', 'great value for money', 'works perfectly, very happy', 'excellent quality and fast',
      'fantastic, would buy again', 'really good experience', 'the best purchase this year', 'amazing, exceeded my hopes',
      'superb build and design', 'very pleased with it'],
    negative: ['broke after one day', 'terrible quality, avoid', 'waste of money', 'stopped working quickly', 'very disappointed',
      'awful customer service', 'cheap and flimsy', 'does not work at all', 'returned it immediately', 'worst purchase ever'],
    shipping: ['when will my order arrive', 'where is my package', 'tracking number not updating', 'delivery is late',
      'how long does shipping take', 'has my parcel been sent', 'change my delivery address', 'shipping cost to canada',
      'order still not dispatched', 'courier lost my parcel'],
  };
  const lines = ['text,label'];
  for (const [label, texts] of Object.entries(rows)) {
    for (const t of texts) lines.push(`"${t.replace(/"/g, '""')}",${label}`);
  }
  return { csv: `${lines.join('\n')}\n`, labels: Object.keys(rows), count: lines.length - 1 };
}
