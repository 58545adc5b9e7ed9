// The Sessions page: every tenant's sessions, filtered and paged. Only one
// page of rows (PAGE_SIZE) is ever in the DOM, whatever the number of
// sessions; the rows are reused, so a status change moves nothing and keeps
// the keyboard focus where it was.

import { api, ApiError } from './api.js';
import { el, fill, errorBox, statusBadge } from './dom.js';
import { subscribe } from './events.js';
import { Poller } from './poll.js';

export const PAGE_SIZE = 50;
const STATUSES = ['starting', 'qr', 'connected', 'reconnecting', 'stopped', 'logged_out', 'failed'];

// Kept across visits of the page, so coming back from a session keeps the view.
const view = { tenant: '', status: '', phone: '', page: 0 };

export function sessionsPage(root) {
  let sessions = null;
  let signature = '';
  let lastError = null;

  const tenantInput = el('input', { id: 'filter-tenant', list: 'tenants', autocomplete: 'off', value: view.tenant, placeholder: 'all' });
  const tenantList = el('datalist', { id: 'tenants' });
  const statusSelect = el('select', { id: 'filter-status' },
    el('option', { value: '' }, 'all'),
    STATUSES.map((s) => el('option', { value: s, selected: view.status === s }, s)));
  const phoneInput = el('input', { id: 'filter-phone', inputmode: 'numeric', autocomplete: 'off', value: view.phone, placeholder: 'digits' });
  const summary = el('p', { class: 'summary', id: 'sessions-summary', role: 'status' }, 'Loading sessions…');
  const message = el('div', { class: 'message-slot' });
  const tbody = el('tbody', {});
  const pageLabel = el('span', { class: 'page-label' }, '');
  const previous = el('button', { type: 'button', class: 'quiet', onclick: () => turn(-1) }, '← Previous');
  const next = el('button', { type: 'button', class: 'quiet', onclick: () => turn(1) }, 'Next →');

  const tableElement = el('table', { class: 'sessions', 'aria-describedby': 'sessions-summary', 'aria-busy': 'true' },
    el('colgroup', {},
      el('col', { class: 'w-phone' }), el('col', { class: 'w-tenant' }), el('col', { class: 'w-status' }),
      el('col', { class: 'w-ready' }), el('col', { class: 'w-jid' }), el('col', { class: 'w-pending' }),
      el('col', { class: 'w-error' })),
    el('thead', {}, el('tr', {},
      ['Phone', 'Tenant', 'Status', 'Ready', 'Own JID', 'Pending', 'Last error'].map((h, i) =>
        el('th', { scope: 'col', class: ['', '', '', 'col-ready', 'col-jid', 'num col-pending', 'col-error'][i] }, h)))),
    tbody);

  fill(root,
    el('div', { class: 'page-head' },
      el('h1', {}, 'Sessions'),
      summary),
    el('form', { class: 'toolbar', role: 'search', onsubmit: (e) => e.preventDefault() },
      el('label', {}, 'Tenant', tenantInput), tenantList,
      el('label', {}, 'Status', statusSelect),
      el('label', {}, 'Phone', phoneInput)),
    linkForm(),
    message,
    el('div', { class: 'table-wrap' }, tableElement),
    el('nav', { class: 'pager', 'aria-label': 'Pages of sessions' }, previous, pageLabel, next));

  function matching() {
    const tenant = view.tenant.trim();
    const phone = view.phone.trim();
    return sessions.filter((s) =>
      (tenant === '' || (s.companyId ?? '') === tenant)
      && (view.status === '' || s.status === view.status)
      && (phone === '' || s.phoneNumber.includes(phone)));
  }

  function render() {
    if (sessions === null) return;
    tableElement.setAttribute('aria-busy', 'false');
    const rows = matching();
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
    view.page = Math.min(view.page, pages - 1);
    const first = view.page * PAGE_SIZE;
    const shown = rows.slice(first, first + PAGE_SIZE);
    summary.textContent = rows.length === 0
      ? (sessions.length === 0 ? 'No sessions yet.' : `No session matches (of ${sessions.length}).`)
      : `${first + 1}–${first + shown.length} of ${rows.length}`
        + (rows.length === sessions.length ? '' : ` (filtered from ${sessions.length})`);
    pageLabel.textContent = `Page ${view.page + 1} of ${pages}`;
    previous.disabled = view.page === 0;
    next.disabled = view.page >= pages - 1;
    while (tbody.rows.length < shown.length) tbody.append(newRow());
    while (tbody.rows.length > shown.length) tbody.lastElementChild.remove();
    shown.forEach((session, i) => updateRow(tbody.rows[i], session));
  }

  function turn(delta) {
    view.page = Math.max(0, view.page + delta);
    render();
  }

  function refilter() {
    view.tenant = tenantInput.value;
    view.status = statusSelect.value;
    view.phone = phoneInput.value;
    view.page = 0;
    render();
  }
  tenantInput.addEventListener('input', refilter);
  statusSelect.addEventListener('change', refilter);
  phoneInput.addEventListener('input', refilter);

  async function round() {
    try {
      const body = await api('GET', '/api/sessions');
      const list = body.sessions.slice().sort((a, b) => a.phoneNumber.localeCompare(b.phoneNumber));
      const next = JSON.stringify(list);
      if (lastError !== null) { lastError = null; fill(message); }
      if (next === signature) return false;
      signature = next;
      sessions = list;
      const tenants = [...new Set(list.map((s) => s.companyId).filter(Boolean))].sort();
      fill(tenantList, tenants.map((t) => el('option', { value: t })));
      render();
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status !== 401) {
        lastError = e.message;
        fill(message, errorBox(e.message));
        if (sessions === null) summary.textContent = 'The sessions could not be loaded.';
      }
      throw e;
    }
  }

  const poller = new Poller(round, { baseMs: 2000, idleMaxMs: 15_000 }).start();

  // With the event stream, a status change shows at once; anything the
  // events do not carry (a new phone) is fetched by a poll round.
  const unsubscribe = subscribe(({ type, data }) => {
    if (sessions === null || !data || !data.phone) return;
    const index = sessions.findIndex((s) => s.phoneNumber === data.phone);
    if (type === 'session.cleared') {
      if (index !== -1) sessions.splice(index, 1);
    } else if (index === -1) {
      poller.now();
      return;
    } else if (type === 'session.status') {
      Object.assign(sessions[index], {
        status: data.status ?? sessions[index].status,
        ready: data.ready ?? sessions[index].ready,
        lastError: data.lastError ?? null,
        me: data.me ?? sessions[index].me,
      });
    } else if (type === 'session.logged_out') {
      Object.assign(sessions[index], { status: 'logged_out', ready: false });
    } else {
      return;
    }
    signature = JSON.stringify(sessions);
    render();
  });

  return {
    stop() {
      poller.stop();
      unsubscribe();
    },
  };
}

function newRow() {
  const link = el('a', {});
  return el('tr', {},
    el('td', {}, link), el('td', {}), el('td', {}), el('td', { class: 'col-ready' }),
    el('td', { class: 'col-jid mono' }), el('td', { class: 'num col-pending' }), el('td', { class: 'col-error' }));
}

function updateRow(row, session) {
  const [phone, tenant, status, ready, jid, pending, error] = row.cells;
  row.dataset.phone = session.phoneNumber;
  row.dataset.status = session.status;
  const link = phone.firstElementChild;
  link.href = `#/session/${session.phoneNumber}`;
  link.textContent = `+${session.phoneNumber}`;
  tenant.textContent = session.companyId ?? '—';
  if (status.firstElementChild?.dataset.status !== session.status) fill(status, statusBadge(session.status));
  ready.textContent = session.ready ? 'yes' : 'no';
  jid.textContent = session.me ?? '—';
  jid.title = session.me ?? '';
  pending.textContent = String(session.pendingMessages ?? 0);
  error.textContent = session.lastError ?? '';
  error.title = session.lastError ?? '';
}

/** "Link a phone": creates (or starts again) a session, then opens it to show its QR. */
function linkForm() {
  const phone = el('input', { id: 'link-phone', inputmode: 'numeric', autocomplete: 'off', required: true, pattern: '[0-9]{8,15}', placeholder: '51987654321' });
  const tenant = el('input', { id: 'link-tenant', autocomplete: 'off', placeholder: 'companyId' });
  const button = el('button', { type: 'submit' }, 'Create and show its QR');
  const message = el('div', { class: 'message-slot' });
  const form = el('form', { class: 'link-form' },
    el('label', {}, 'Phone (digits, with country code)', phone),
    el('label', {}, 'Tenant', tenant),
    button, message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    fill(message);
    try {
      const body = { phoneNumber: phone.value.trim() };
      if (tenant.value.trim() !== '') body.companyId = tenant.value.trim();
      const created = await api('POST', '/api/sessions', body);
      location.hash = `#/session/${created.phoneNumber}`;
    } catch (e) {
      fill(message, errorBox(e.message));
    } finally {
      button.disabled = false;
    }
  });
  return el('details', { class: 'card link' }, el('summary', {}, 'Link a phone'), form);
}
