// The Plugins page: what `GET /api/plugins` says of each loaded plugin.

import { api, ApiError } from './api.js';
import { el, fill, errorBox, table, formatTime } from './dom.js';
import { Poller } from './poll.js';

export function pluginsPage(root) {
  document.title = 'Plugins · lila console';
  const summary = el('p', { class: 'summary', role: 'status' }, 'Loading plugins…');
  const message = el('div', { class: 'message-slot' });
  const slot = el('div', {}, el('p', { class: 'loading', 'aria-busy': 'true' }, 'Loading plugins…'));
  fill(root, el('div', { class: 'page-head' }, el('h1', {}, 'Plugins'), summary), message, slot);
  let signature = '';

  async function round() {
    let body;
    try {
      body = await api('GET', '/api/plugins');
    } catch (e) {
      if (e instanceof ApiError && e.status !== 401) fill(message, errorBox(e.message));
      throw e;
    }
    fill(message, body.configError ? errorBox(`The plugin configuration has an error: ${body.configError}`) : null);
    const next = JSON.stringify(body);
    if (next === signature) return false;
    signature = next;
    const plugins = body.plugins ?? [];
    summary.textContent = `${plugins.length} plugin${plugins.length === 1 ? '' : 's'}`
      + (body.configFile ? `, configured in ${body.configFile}` : '');
    fill(slot, plugins.length === 0
      ? el('p', { class: 'hint' }, 'No plugin is installed.')
      : table(null,
        ['Plugin', 'Owner', 'State', 'Version (sha256)', 'Hooks', 'Fail', 'Budget', 'Calls ok / vetoed / failed / timed out', 'Last error'],
        plugins.map((p) => [
          el('span', {}, p.name, p.enabled === false ? el('span', { class: 'hint' }, ' (disabled)') : null),
          p.owner ?? 'operator',
          el('span', { class: `plugin-state plugin-${p.state}`, title: p.loadedAtMs ? `loaded ${formatTime(p.loadedAtMs)}` : '' }, p.state ?? (p.loaded ? 'loaded' : '—')),
          el('span', { class: 'mono', title: p.sha256 ?? '' }, p.sha256 ? p.sha256.slice(0, 12) : '—'),
          (p.hooks ?? []).join(', '),
          p.failMode ?? '—',
          `${p.timeBudgetMs} ms, ${p.memoryMib} MiB`,
          el('span', { class: 'mono' }, `${p.calls?.ok ?? 0} / ${p.calls?.vetoed ?? 0} / ${p.calls?.failed ?? 0} / ${p.calls?.timedOut ?? 0}`),
          p.lastError ?? '',
        ]),
        { class: 'plugins' }));
    return true;
  }

  const poller = new Poller(round, { baseMs: 5000, idleMaxMs: 30_000, liveMs: 30_000 }).start();
  return { stop: () => poller.stop() };
}
