// One session's page: its details, the QR to link it, a pairing code, its
// outbox, and the reset, confirmed by naming the phone, with its report.

import { api, ApiError, sessionPath } from './api.js';
import { el, fill, errorBox, statusBadge, details, table, formatTime, formatBytes } from './dom.js';
import { subscribe } from './events.js';
import { Poller } from './poll.js';
import { QrPanel } from './qr.js';

export function sessionPage(root, phone) {
  document.title = `+${phone} · lila console`;
  let status = null;
  let pendingSeen = null;
  let cleared = false;

  const badgeSlot = el('span', { class: 'badge-slot' }, statusBadge('starting'));
  const message = el('div', { class: 'message-slot' });
  const detailsSlot = el('div', { class: 'details-slot' }, el('p', { class: 'loading', 'aria-busy': 'true' }, 'Loading the session…'));
  const qr = new QrPanel(phone);
  const pairing = pairingCode(phone);
  const outboxSlot = el('div', { class: 'outbox-slot' }, el('p', { class: 'loading' }, 'Loading the outbox…'));
  const reportSlot = el('section', { class: 'report-slot', id: 'reset-result', 'aria-live': 'polite' });
  const resetButton = el('button', { type: 'button', class: 'danger', id: 'reset' }, `Reset +${phone}…`);
  const dialog = confirmDialog(phone, () => reset());
  resetButton.addEventListener('click', () => dialog.showModal());

  fill(root,
    el('p', { class: 'back' }, el('a', { href: '#/sessions' }, '← All sessions')),
    el('div', { class: 'page-head' }, el('h1', {}, `+${phone}`), badgeSlot),
    message,
    el('div', { class: 'grid' },
      el('section', { class: 'card', 'aria-labelledby': 'h-details' }, el('h2', { id: 'h-details' }, 'Details'), detailsSlot),
      el('section', { class: 'card', 'aria-labelledby': 'h-link' }, el('h2', { id: 'h-link' }, 'Link a device'), qr.element, pairing)),
    el('section', { class: 'card', 'aria-labelledby': 'h-outbox' }, el('h2', { id: 'h-outbox' }, 'Outbox'), outboxSlot),
    el('section', { class: 'card danger-zone', 'aria-labelledby': 'h-reset' },
      el('h2', { id: 'h-reset' }, 'Reset'),
      el('p', {}, 'A reset logs the device out of WhatsApp and deletes its credentials, backups, queued messages and message statuses. '
        + 'Plugins may refuse it. Nothing brings the session back until it is created again, with a new QR.'),
      resetButton),
    reportSlot,
    dialog);

  function showDetails(session) {
    fill(badgeSlot, statusBadge(session.status));
    fill(detailsSlot, details([
      ['Status', statusBadge(session.status)],
      ['Ready', session.ready ? 'yes' : 'no'],
      ['Tenant', session.companyId ?? '—'],
      ['Own JID', el('span', { class: 'mono' }, session.me ?? '—')],
      ['Pending messages', String(session.pendingMessages ?? 0)],
      ['Last error', session.lastError ?? '—'],
    ]));
  }

  async function loadOutbox() {
    try {
      const body = await api('GET', sessionPath(phone, '/outbox'));
      fill(outboxSlot, body.pending.length === 0
        ? el('p', { class: 'hint' }, 'Nothing is waiting to be sent.')
        : table(null, ['Message id', 'To', 'Queued', 'Attempts'],
          body.pending.map((m) => [el('span', { class: 'mono' }, m.id), m.to, formatTime(m.createdAtMs), String(m.attempts)])));
    } catch (e) {
      if (e instanceof ApiError) fill(outboxSlot, errorBox(e.message));
    }
  }

  async function round() {
    if (cleared) return false;
    let session;
    try {
      session = await api('GET', sessionPath(phone, '/status'));
    } catch (e) {
      if (e instanceof ApiError && e.status !== 401) {
        if (e.status === 404) {
          fill(badgeSlot);
          fill(detailsSlot, errorBox(e.message));
          qr.explain('There is no session, so there is no QR code.');
          fill(outboxSlot);
        } else {
          fill(message, errorBox(e.message));
        }
      }
      throw e;
    }
    fill(message);
    const changed = status === null || session.status !== status.status || session.lastError !== status.lastError
      || session.me !== status.me || session.pendingMessages !== status.pendingMessages;
    status = session;
    if (changed) showDetails(session);
    let qrChanged = false;
    if (session.status === 'qr' || session.status === 'starting') {
      qrChanged = await qr.refresh();
    } else if (changed) {
      qr.explain(session.status === 'connected' || session.me
        ? 'This session is paired: there is no QR code.'
        : `There is no QR code while the session is ${session.status}.`);
    }
    if (session.pendingMessages !== pendingSeen) {
      pendingSeen = session.pendingMessages;
      await loadOutbox();
    }
    return changed || qrChanged;
  }

  // A QR lives about 20 s: poll at least that often while one is shown.
  const poller = new Poller(round, { baseMs: 1500, idleMaxMs: 5000 }).start();

  const unsubscribe = subscribe(({ type, data }) => {
    if (!data || data.phone !== phone || cleared) return;
    if (type === 'session.qr') {
      qr.refresh().catch(() => {});
    } else if (type === 'session.cleared') {
      cleared = true;
      poller.stop();
      showCleared(data.report, 'This session was reset.');
    } else {
      poller.now();
    }
  });

  function showCleared(report, heading) {
    fill(badgeSlot, statusBadge('cleared'));
    fill(detailsSlot, el('p', {}, 'This session was reset: it is no longer among the sessions. '
      + 'Creating it again (Link a phone) starts afresh, with a new QR.'));
    qr.explain('The session was reset: there is no QR code until it is created again.');
    fill(outboxSlot, el('p', { class: 'hint' }, 'The reset dropped the outbox.'));
    resetButton.disabled = true;
    pairing.querySelector('button').disabled = true;
    fill(reportSlot, report ? resetReport(report, heading) : el('div', { class: 'card' }, el('h2', {}, heading)));
  }

  async function reset() {
    resetButton.disabled = true;
    fill(reportSlot, el('div', { class: 'card' }, el('p', { class: 'loading', 'aria-busy': 'true' }, `Resetting +${phone}…`)));
    poller.stop();
    try {
      const report = await api('POST', sessionPath(phone, '/clear'));
      cleared = true;
      showCleared(report, `+${phone} was reset`);
    } catch (e) {
      resetButton.disabled = false;
      fill(reportSlot, el('div', { class: 'card refused', id: 'reset-refused' },
        el('h2', {}, e.status === 409 ? 'The reset was refused' : 'The reset failed'),
        errorBox(e.message),
        el('p', { class: 'hint' }, 'Nothing was changed.')));
      if (e.status !== 401) poller.start();
    }
    reportSlot.scrollIntoView({ block: 'nearest' });
  }

  return {
    stop() {
      poller.stop();
      unsubscribe();
      if (dialog.open) dialog.close();
    },
  };
}

/** The confirmation: it names the phone, and Cancel has the focus. */
function confirmDialog(phone, onConfirm) {
  const cancel = el('button', { type: 'button', class: 'quiet', autofocus: true }, 'Cancel');
  const confirm = el('button', { type: 'button', class: 'danger', id: 'confirm-reset' }, `Reset +${phone}`);
  const dialog = el('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-title' },
    el('h2', { id: 'confirm-title' }, `Reset +${phone}?`),
    el('p', {}, `This logs +${phone} out of WhatsApp and deletes its credentials, backups and queued messages. It cannot be undone.`),
    el('div', { class: 'actions' }, cancel, confirm));
  cancel.addEventListener('click', () => dialog.close());
  confirm.addEventListener('click', () => {
    dialog.close();
    onConfirm();
  });
  return dialog;
}

function pairingCode(phone) {
  const result = el('div', { class: 'message-slot pairing-result', 'aria-live': 'polite' });
  const button = el('button', { type: 'button', id: 'pairing-code' }, 'Request a pairing code');
  button.addEventListener('click', async () => {
    button.disabled = true;
    fill(result, el('p', { class: 'loading' }, 'Asking WhatsApp for a code…'));
    try {
      const body = await api('POST', sessionPath(phone, '/pairing-code'));
      const code = String(body.code);
      fill(result,
        el('p', { class: 'pairing-code mono' }, code.length === 8 ? `${code.slice(0, 4)}-${code.slice(4)}` : code),
        el('p', { class: 'hint' }, `On +${phone}: Linked devices → Link a device → Link with phone number instead, then type this code.`));
    } catch (e) {
      fill(result, errorBox(e.message));
    } finally {
      button.disabled = false;
    }
  });
  return el('div', { class: 'pairing' }, button, result);
}

/** The reset's report: what was removed, the logout, the messages dropped and each hook's outcome. */
export function resetReport(report, heading) {
  const removed = report.removed ?? [];
  const hooks = report.hooks ?? [];
  return el('div', { class: 'card report', id: 'reset-report' },
    el('h2', {}, heading),
    report.message ? el('p', {}, report.message) : null,
    details([
      ['Logged out of WhatsApp', report.loggedOut ? 'yes' : 'no (the reset went on without it)'],
      ['Queued messages dropped', String(report.outboxMessagesDropped ?? 0)],
      ['Took', typeof report.durationMs === 'number' ? `${report.durationMs} ms` : '—'],
    ]),
    table('Removed', ['What', 'Path', 'Existed', 'Files', 'Size'],
      removed.map((r) => [r.kind, el('span', { class: 'mono' }, r.path), r.existed ? 'yes' : 'no', String(r.files ?? 0), formatBytes(r.bytes)]),
      { class: 'removed' }),
    hooks.length === 0
      ? el('p', { class: 'hint' }, 'No plugin hook ran.')
      : table('Plugins', ['Plugin', 'Hook', 'Outcome', 'Detail', 'Took'],
        hooks.map((h) => [h.plugin, h.hook, el('span', { class: `outcome outcome-${h.outcome}` }, h.outcome), h.detail ?? '', `${h.durationMs} ms`]),
        { class: 'hooks' }));
}
