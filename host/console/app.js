// The console's shell: sign-in, the navigation, and which page the address
// (`#/sessions`, `#/session/{phone}`, `#/plugins`, `#/health`) shows.

import { forgetToken, onUnauthorized, signIn, token } from './api.js';
import { el, fill, errorBox } from './dom.js';
import { onLiveChange, startEvents, stopEvents } from './events.js';
import { sessionsPage } from './sessions.js';
import { sessionPage } from './session.js';
import { pluginsPage } from './plugins.js';
import { healthPage } from './health.js';

const main = () => document.getElementById('main');
let currentPage = null;
let signInNotice = null;

function leavePage() {
  if (currentPage && currentPage.stop) currentPage.stop();
  currentPage = null;
}

function showSignIn(notice) {
  leavePage();
  stopEvents();
  document.getElementById('nav').hidden = true;
  document.getElementById('sign-out').hidden = true;
  document.getElementById('feed').hidden = true;
  document.title = 'Sign in · lila console';
  const input = el('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, 'aria-describedby': 'token-help',
  });
  const message = el('div', { class: 'message-slot', id: 'sign-in-message' },
    notice ? errorBox(notice) : null);
  const button = el('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = el('form', { class: 'card sign-in', 'aria-labelledby': 'sign-in-title' },
    el('h1', { id: 'sign-in-title' }, 'Sign in'),
    el('label', { for: 'token' }, 'Operator token'),
    input,
    el('p', { id: 'token-help', class: 'hint' },
      'A JWT with role "operator", e.g. from ', el('code', {}, 'lila token --operator'),
      '. It is kept in this tab only, until you sign out or close it.'),
    button,
    message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    button.textContent = 'Signing in…';
    fill(message);
    try {
      await signIn(input.value);
      input.value = '';
      // Straight to the page the address names; with none, the hash change routes.
      if (location.hash.startsWith('#/')) route();
      else location.hash = '#/sessions';
    } catch (e) {
      fill(message, errorBox(e.message));
      input.focus();
    } finally {
      button.disabled = false;
      button.textContent = 'Sign in';
    }
  });
  fill(main(), form);
  input.focus();
}

function highlightNav(name) {
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.page === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function route() {
  if (!token()) {
    showSignIn(signInNotice);
    signInNotice = null;
    return;
  }
  document.getElementById('nav').hidden = false;
  document.getElementById('sign-out').hidden = false;
  document.getElementById('feed').hidden = false;
  startEventsOnce();
  leavePage();
  const hash = location.hash.replace(/^#/, '');
  const [, name = 'sessions', argument] = hash.split('/');
  const root = fill(main());
  if (name === 'session' && argument) {
    highlightNav('sessions');
    currentPage = sessionPage(root, decodeURIComponent(argument));
  } else if (name === 'plugins') {
    highlightNav('plugins');
    currentPage = pluginsPage(root);
  } else if (name === 'health') {
    highlightNav('health');
    currentPage = healthPage(root);
  } else {
    highlightNav('sessions');
    currentPage = sessionsPage(root);
  }
}

let eventsStarted = false;
function startEventsOnce() {
  if (eventsStarted) return;
  eventsStarted = true;
  startEvents();
}

function signOut(notice) {
  forgetToken();
  eventsStarted = false;
  stopEvents();
  signInNotice = notice ?? null;
  // The address stays, so signing in again returns to the same page.
  route();
}

function init() {
  document.getElementById('sign-out').addEventListener('click', () => signOut());
  onUnauthorized((sentence) => signOut(`Signed out: ${sentence}`));
  onLiveChange((live) => {
    const feed = document.getElementById('feed');
    feed.textContent = live ? 'Live' : 'Polling';
    feed.title = live
      ? 'Updates arrive from the event stream (/api/events).'
      : 'Updates come from polling the API; the event stream is not available.';
    feed.dataset.live = String(live);
  });
  window.addEventListener('hashchange', route);
  route();
}

init();
