// Small DOM helpers shared by the pages: element construction, formatting, and the
// standard way of showing an error in words.

/**
 * Creates an element. `attrs` keys: `class`, `text`, `on<event>` handlers, `dataset`
 * objects, boolean attributes (true/false), anything else as an attribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An SVG element with attributes. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export const fmt = {
  pct(x, digits = 1) {
    return typeof x === 'number' && Number.isFinite(x) ? `${(x * 100).toFixed(digits)}%` : '—';
  },
  /** A metric with a fixed number of decimals (1 → "1.000"). */
  num(x, digits = 3) {
    if (typeof x !== 'number' || !Number.isFinite(x)) return '—';
    if (x !== 0 && (Math.abs(x) < 10 ** -digits || Math.abs(x) >= 1e6)) return x.toExponential(2);
    return x.toFixed(digits);
  },
  /** A setting's number as short as it reads (0.2, 300, 3e-5). */
  compact(x) {
    if (Number.isInteger(x)) return String(x);
    if (x !== 0 && Math.abs(x) < 1e-3) return x.toExponential();
    return String(Number(x.toPrecision(4)));
  },
  int(x) {
    return typeof x === 'number' ? x.toLocaleString('en') : '—';
  },
  date(s) {
    if (!s) return '—';
    const d = new Date(s);
    return Number.isNaN(d.getTime()) ? s : d.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'short' });
  },
  /** A JSON value as short readable text. */
  value(v) {
    if (v === null || v === undefined) return 'none';
    if (typeof v === 'number') return fmt.compact(v);
    if (typeof v === 'string') return v;
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    return Object.entries(v).map(([k, x]) => `${k}: ${fmt.value(x)}`).join(', ');
  },
  /** A training candidate's name: "head_only" → "Head only", "finetuned" → "Fine-tuned". */
  candidate(name) {
    return { head_only: 'Head only', finetuned: 'Fine-tuned', lexical: 'Lexical (TF-IDF words)' }[name] || fmt.words(name);
  },
  shortId(id) {
    return id ? id.slice(0, 8) : '—';
  },
  /** "training_head" → "Training head". */
  words(s) {
    if (!s) return '';
    const t = String(s).replace(/_/g, ' ');
    return t.charAt(0).toUpperCase() + t.slice(1);
  },
};

/** An alert box that says what went wrong, in the API's words. */
export function errorBox(err, prefix) {
  const code = err && err.code ? err.code : null;
  const message = err && err.message ? err.message : String(err);
  return h('div', { class: 'alert alert-error', role: 'alert' },
    h('strong', { text: prefix || 'Something went wrong' }),
    h('p', { class: 'alert-message', text: message }),
    code ? h('p', { class: 'alert-code' }, 'Error code: ', h('code', { text: code })) : null);
}

/** A status pill: queued, running, succeeded, failed, cancelled. */
export function statusBadge(status) {
  return h('span', { class: `badge badge-${status}`, text: status });
}

/** A card with a heading. */
export function card(title, ...body) {
  return h('section', { class: 'card' }, title ? h('h2', { text: title }) : null, ...body);
}

/** A definition list from [term, value] pairs. */
export function facts(pairs) {
  return h('dl', { class: 'facts' },
    pairs.filter(Boolean).map(([term, value]) => [h('dt', { text: term }), h('dd', {}, value)]));
}

/** A link to a route inside the app. */
export function link(href, text, attrs = {}) {
  return h('a', { href, ...attrs }, text);
}

export function isAbort(err) {
  return err && err.name === 'AbortError';
}
