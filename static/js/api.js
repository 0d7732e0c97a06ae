// The one place the UI talks to the service: JSON calls, the upload with progress, the
// live event stream and downloads. Every request carries `Authorization: Bearer <key>`
// when the user has saved an API key, so the UI works on servers that require one.

const KEY_STORAGE = 'warmstart.apiKey';

/** An error answered by the API (`{"error":{"code","message"}}`) or a network failure. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

export function getApiKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || '';
  } catch {
    return '';
  }
}

export function setApiKey(key) {
  const trimmed = (key || '').trim();
  if (trimmed) localStorage.setItem(KEY_STORAGE, trimmed);
  else localStorage.removeItem(KEY_STORAGE);
  window.dispatchEvent(new CustomEvent('apikeychange'));
}

function authHeaders(extra = {}) {
  const key = getApiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

/** Turns a non-2xx answer into an ApiError with the server's own words. */
async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON (a proxy's page, say): keep the status line.
  }
  if (response.status === 401) {
    message = getApiKey()
      ? `${message} — the saved API key was refused: check it under “API key” at the top of the page.`
      : `${message} — this server requires an API key: enter it under “API key” at the top of the page.`;
    window.dispatchEvent(new CustomEvent('apiunauthorized'));
  }
  return new ApiError(response.status, code, message);
}

function networkError(err) {
  if (err && err.name === 'AbortError') return err;
  return new ApiError(0, 'network_error', `Cannot reach the service (${err && err.message ? err.message : err}). Is it running?`);
}

/** A JSON request; resolves to the parsed body (null for 204), rejects with ApiError. */
export async function api(method, path, body, { signal } = {}) {
  const init = { method, headers: authHeaders({ Accept: 'application/json' }), signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw networkError(err);
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, opts) => api('GET', path, undefined, opts);
export const post = (path, body, opts) => api('POST', path, body, opts);
export const del = (path, opts) => api('DELETE', path, undefined, opts);

/**
 * Uploads a dataset file as multipart (`file`, optional `name`), reporting progress as a
 * fraction 0..1. XMLHttpRequest because fetch() cannot report upload progress.
 */
export function uploadDataset(file, name, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append('file', file, file.name);
    if (name) form.append('name', name);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/v1/datasets');
    xhr.setRequestHeader('Accept', 'application/json');
    const key = getApiKey();
    if (key) xhr.setRequestHeader('Authorization', `Bearer ${key}`);
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener('load', () => {
      const response = new Response(xhr.responseText, {
        status: xhr.status,
        statusText: xhr.statusText,
      });
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch {
          reject(new ApiError(xhr.status, 'bad_response', 'The server answered the upload with something that is not JSON.'));
        }
      } else {
        errorFrom(response).then(reject, reject);
      }
    });
    xhr.addEventListener('error', () => reject(networkError(new Error('the upload was interrupted'))));
    xhr.send(form);
  });
}

/** Parses one SSE block ("event: x\ndata: y\nid: n") into {event, data, id}. */
export function parseSseBlock(block) {
  const out = { event: 'message', data: '', id: null };
  const data = [];
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') out.event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id') out.id = value;
  }
  out.data = data.join('\n');
  return out;
}

/**
 * Streams a job's events (SSE over fetch, so the API key header is sent; EventSource
 * cannot send headers). Calls onEvent(parsedJson) per event, in order. Resolves with the
 * last event id seen when the server closes the stream; pass it back as `lastId` to
 * resume without repeats.
 */
export async function streamJobEvents(jobId, { onEvent, signal, lastId = null }) {
  const headers = authHeaders({ Accept: 'text/event-stream' });
  if (lastId !== null) headers['Last-Event-ID'] = String(lastId);
  let response;
  try {
    response = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/events`, { headers, signal });
  } catch (err) {
    throw networkError(err);
  }
  if (!response.ok) throw await errorFrom(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let last = lastId;
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (err) {
      if (err && err.name === 'AbortError') throw err;
      return last; // connection dropped: the caller resumes from `last`
    }
    if (chunk.done) return last;
    buffer += chunk.value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const msg = parseSseBlock(block);
      if (!msg.data) continue; // keep-alive comment
      if (msg.id !== null) last = msg.id;
      onEvent(JSON.parse(msg.data));
    }
  }
}

/** Predicts texts; resolves to the API's `predictions`. */
export async function predictTexts(modelId, inputs, topK) {
  const body = await post(`/v1/models/${encodeURIComponent(modelId)}/predict`, topK ? { inputs, top_k: topK } : { inputs });
  return body.predictions;
}

/** Predicts images, sent as multipart `file` parts in order (and `top_k`). */
export async function predictImages(modelId, files, topK) {
  const form = new FormData();
  for (const f of files) form.append('file', f, f.name);
  if (topK) form.append('top_k', String(topK));
  let response;
  try {
    response = await fetch(`/v1/models/${encodeURIComponent(modelId)}/predict`, {
      method: 'POST',
      headers: authHeaders({ Accept: 'application/json' }),
      body: form,
    });
  } catch (err) {
    throw networkError(err);
  }
  if (!response.ok) throw await errorFrom(response);
  return (await response.json()).predictions;
}

/**
 * Downloads a model archive. A plain link could not send the API key, so the archive is
 * fetched with it and handed to the browser as a blob.
 */
export async function downloadModel(modelId) {
  let response;
  try {
    response = await fetch(`/v1/models/${encodeURIComponent(modelId)}/download`, { headers: authHeaders() });
  } catch (err) {
    throw networkError(err);
  }
  if (!response.ok) throw await errorFrom(response);
  const blob = await response.blob();
  const disposition = response.headers.get('Content-Disposition') || '';
  const match = /filename="([^"]+)"/.exec(disposition);
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = match ? match[1] : `warmstart-model-${modelId}.zip`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return blob.size;
}
