// Building the page: elements from plain values (never HTML strings, so no
// text from the API can become markup) and the formats every page shares.

/** `el('a', {href: '#/x', class: 'c'}, 'text', child)`: an element with attributes and children. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      node.addEventListener(name.slice(2), value);
    } else if (value === true) {
      node.setAttribute(name, '');
    } else {
      node.setAttribute(name, String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces everything inside `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** A status as a badge of fixed width, so a change never moves the layout. */
export function statusBadge(status) {
  const known = ['starting', 'qr', 'connected', 'reconnecting', 'stopped', 'logged_out', 'failed', 'cleared'];
  const kind = known.includes(status) ? status : 'unknown';
  return el('span', { class: `badge badge-${kind}`, 'data-status': status }, status ?? 'unknown');
}

/** An error sentence from the API, shown where the failed thing would be. */
export function errorBox(sentence) {
  return el('p', { class: 'error', role: 'alert' }, sentence);
}

export function loading(what) {
  return el('p', { class: 'loading', 'aria-busy': 'true' }, `Loading ${what}…`);
}

export function formatTime(ms) {
  if (ms === undefined || ms === null) return '—';
  return new Date(ms).toLocaleString();
}

export function formatBytes(bytes) {
  if (typeof bytes !== 'number') return '—';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function formatDuration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '—';
  const s = Math.floor(seconds);
  const days = Math.floor(s / 86400);
  const hours = Math.floor((s % 86400) / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  if (days > 0) return `${days} d ${hours} h`;
  if (hours > 0) return `${hours} h ${minutes} min`;
  if (minutes > 0) return `${minutes} min ${s % 60} s`;
  return `${s} s`;
}

/** A definition list from `[term, value]` pairs. */
export function details(pairs) {
  return el('dl', { class: 'details' }, pairs.map(([term, value]) => [el('dt', {}, term), el('dd', {}, value)]));
}

/** A table with a header row; `rows` are arrays of cells (strings or nodes). */
export function table(caption, headers, rows, attributes = {}) {
  return el('div', { class: 'table-wrap' },
    el('table', attributes,
      caption ? el('caption', {}, caption) : null,
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows.map((cells) => el('tr', {}, cells.map((c) => el('td', {}, c)))))));
}
