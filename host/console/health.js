// The Health page: uptime, sessions, resets and failures, read from
// `/metrics` (the Prometheus text that monitoring scrapes, so both agree).

import { metricsText } from './api.js';
import { el, fill, errorBox, formatDuration } from './dom.js';
import { parseMetrics, metricValue } from './metrics.js';
import { Poller } from './poll.js';

const CAUSES = ['unreachable', 'refused', 'timeout', 'tls', 'rejected', 'other'];
const OUTCOMES = ['ok', 'vetoed', 'failed', 'timed_out', 'skipped'];

function tile(label, value, note) {
  const shown = value === undefined ? '—' : typeof value === 'number' ? value.toLocaleString() : value;
  return el('div', { class: 'tile' },
    el('span', { class: 'tile-label' }, label),
    el('span', { class: 'tile-value' }, shown),
    note ? el('span', { class: 'tile-note' }, note) : null);
}

function group(title, tiles) {
  return el('section', { class: 'card', 'aria-label': title }, el('h2', {}, title), el('div', { class: 'tiles' }, tiles));
}

export function healthPage(root) {
  document.title = 'Health · lila console';
  const message = el('div', { class: 'message-slot' });
  const slot = el('div', {}, el('p', { class: 'loading', 'aria-busy': 'true' }, 'Loading metrics…'));
  const stamp = el('p', { class: 'summary', role: 'status' }, '');
  fill(root, el('div', { class: 'page-head' }, el('h1', {}, 'Health'), stamp), message, slot);

  async function round() {
    let text;
    try {
      text = await metricsText();
    } catch (e) {
      fill(message, errorBox(e.message));
      throw e;
    }
    fill(message);
    const m = parseMetrics(text);
    const v = (name, where) => metricValue(m, name, where);
    fill(slot,
      group('Server', [
        tile('Uptime', formatDuration(v('lila_uptime_seconds'))),
        tile('Connected sessions', v('lila_sessions_connected')),
        tile('Resumed at the last start', v('lila_boot_sessions_resumed'), `${v('lila_boot_sessions_reconnected') ?? 0} connected again`),
        tile('Open files', v('lila_open_files'), v('lila_open_files_limit') ? `limit ${v('lila_open_files_limit').toLocaleString()}` : null),
        tile('Session actors that panicked', v('lila_actor_panics_total')),
      ]),
      group('Resets', [
        tile('Completed', v('lila_resets_completed_total')),
        tile('Vetoed by a plugin', v('lila_resets_vetoed_total')),
        tile('Failed', v('lila_resets_failed_total')),
        tile('Finished at start-up', v('lila_resets_finished_at_boot_total')),
        tile('Logged out by WhatsApp', v('lila_server_logouts_total')),
      ]),
      group('Connections to WhatsApp', [
        tile('Client starts', v('lila_client_starts_total'), `${v('lila_client_start_failures_total') ?? 0} failed`),
        ...CAUSES.map((cause) => tile(`Failures: ${cause}`, v('lila_connection_failures_total', { cause }))),
      ]),
      group('Messages and backups', [
        tile('Messages queued', v('lila_messages_enqueued_total')),
        tile('Messages sent', v('lila_messages_sent_total'), `${v('lila_message_send_failures_total') ?? 0} send failures`),
        tile('Backups taken', v('lila_backups_taken_total'), `${v('lila_backup_failures_total') ?? 0} failed`),
        tile('Stores restored', v('lila_backups_restored_total')),
      ]),
      group('Plugin hook calls', ['before_clear', 'after_clear'].flatMap((hook) =>
        OUTCOMES.map((outcome) => tile(`${hook} ${outcome}`, v('lila_hook_calls_total', { hook, outcome }))))));
    stamp.textContent = `Read at ${new Date().toLocaleTimeString()}`;
    return true;
  }

  const poller = new Poller(round, { baseMs: 5000, idleMaxMs: 5000, liveMs: 5000 }).start();
  return { stop: () => poller.stop() };
}
