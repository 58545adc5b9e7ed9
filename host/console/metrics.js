// Reading the Prometheus text format of `GET /metrics`: enough of it for the
// Health page (samples with labels; comments and types are skipped).

/** Parses `text` into a Map from metric name to `[{labels, value}]`. */
export function parseMetrics(text) {
  const samples = new Map();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const [, name, , labelText, valueText] = match;
    const labels = {};
    for (const pair of (labelText ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]] = pair[2].replace(/\\n/g, '\n').replace(/\\(.)/g, '$1');
    }
    const value = valueText === '+Inf' ? Infinity : valueText === '-Inf' ? -Infinity : Number(valueText);
    if (!samples.has(name)) samples.set(name, []);
    samples.get(name).push({ labels, value });
  }
  return samples;
}

/** The value of `name` (summed over its label sets that match `where`), or undefined. */
export function metricValue(samples, name, where = {}) {
  const list = samples.get(name);
  if (!list) return undefined;
  const matching = list.filter((s) => Object.entries(where).every(([k, v]) => s.labels[k] === v));
  if (matching.length === 0) return undefined;
  return matching.reduce((sum, s) => sum + s.value, 0);
}
