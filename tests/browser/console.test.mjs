// End-to-end tests of the operator console (/console) in headless Chromium,
// against a real `lila` and the `wa-sim` WhatsApp simulator, both started
// here from target/debug (run.sh checks they are built). The phone scans the
// QR taken from the page's pixels, never from the API.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';
import jsQR from 'jsqr';
import { PNG } from 'pngjs';

const ROOT = resolve(import.meta.dirname, '../..');
const LILA = process.env.LILA_BIN ?? join(ROOT, 'target/debug/lila');
const WA_SIM = process.env.WA_SIM_BIN ?? join(ROOT, 'target/debug/wa-sim');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const PLUGINS = process.env.PLUGINS_DIST ?? join(ROOT, 'plugins/dist');
const SHOTS = process.env.SCREENSHOTS ?? join(ROOT, 'target/console-screenshots');
const SECRET = 'console-browser-test-secret-0123456789';
const PHONE = '51987654321';
const PROTECTED_PHONE = '51911111111';

const children = [];
let work;
let base;
let simAdmin;
let operatorToken;
let tenantToken;
let browser;

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

function start(command, args, env, log) {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  const keep = (chunk) => { lines.push(chunk.toString()); if (lines.length > 200) lines.shift(); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.log = () => `--- ${log} ---\n${lines.join('')}`;
  children.push(child);
  return child;
}

async function waitFor(what, check, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

async function apiCall(method, path, body, token = operatorToken) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body) headers['Content-Type'] = 'application/json';
  const response = await fetch(`${base}${path}`, { method, headers, body: body ? JSON.stringify(body) : undefined });
  return { status: response.status, body: await response.json() };
}

/** A fresh page whose console errors and failed policy checks fail the test. */
async function newPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, ...options });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // Chromium reports every non-2xx fetch as a failed resource; those are
    // expected here (401, 403, 404 for /api/events, 409). Anything else,
    // such as a Content-Security-Policy refusal, is a fault.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) page.problems.push(m.text());
  });
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function signIn(page, token) {
  await page.goto(`${base}/console`);
  await page.locator('#token').waitFor();
  // The keyboard alone: the token field has the focus, Enter submits.
  await page.keyboard.type(token);
  await page.keyboard.press('Enter');
}

/** Decodes the QR shown on the page from its pixels, as a phone's camera would. */
async function qrFromPage(page) {
  const image = page.locator('#qr .qr-box');
  const png = PNG.sync.read(await image.screenshot());
  const code = jsQR(new Uint8ClampedArray(png.data.buffer, png.data.byteOffset, png.data.length), png.width, png.height);
  assert.ok(code, 'the QR on the page could not be decoded');
  return code.data;
}

before(async () => {
  for (const file of [LILA, WA_SIM, CHROMIUM, join(PLUGINS, 'tenant-policy.wasm')]) {
    assert.ok(existsSync(file), `${file} is missing (run tests/browser/run.sh)`);
  }
  mkdirSync(SHOTS, { recursive: true });
  work = mkdtempSync(join(tmpdir(), 'lila-console-'));
  const simPort = await freePort();
  const lilaPort = await freePort();
  simAdmin = `http://127.0.0.1:${simPort}`;
  base = `http://127.0.0.1:${lilaPort}`;

  const sim = start(WA_SIM, ['--listen', `127.0.0.1:${simPort}`], { RUST_LOG: 'warn' }, 'wa-sim');
  await waitFor('wa-sim', async () => (await fetch(`${simAdmin}/admin/devices`)).ok).catch((e) => {
    throw new Error(`${e.message}\n${sim.log()}`);
  });

  // tenant-policy, fail closed: acme's PROTECTED_PHONE can never be reset.
  const config = join(work, 'lila.toml');
  writeFileSync(config, [
    '[plugins]',
    'version = 1',
    `dir = ${JSON.stringify(PLUGINS)}`,
    '',
    '[[plugins.plugin]]',
    'name = "tenant-policy"',
    'hooks = ["before-clear"]',
    'fail = "closed"',
    '[plugins.plugin.config]',
    `tenants = { acme = { protected_phones = ["${PROTECTED_PHONE}"] } }`,
    '',
  ].join('\n'));
  const env = {
    LILA_DATA_DIR: join(work, 'data'),
    LILA_BIND: `127.0.0.1:${lilaPort}`,
    LILA_JWT_SECRET: SECRET,
    LILA_WA_URL: `ws://127.0.0.1:${simPort}/ws/chat`,
    LILA_CONFIG: config,
    RUST_LOG: 'warn',
    NO_COLOR: '1',
  };
  const lila = start(LILA, ['serve'], env, 'lila');
  await waitFor('lila', async () => (await fetch(`${base}/health`)).ok).catch((e) => {
    throw new Error(`${e.message}\n${lila.log()}`);
  });
  const mint = (...args) => execFileSync(LILA, ['token', ...args], { env: { ...process.env, ...env } }).toString().trim();
  operatorToken = mint('--operator');
  tenantToken = mint('--company', 'acme');
  // A reset waits for a plugin that is still compiling; waiting here keeps
  // that time out of the reset's budget.
  await waitFor('tenant-policy to load', async () => {
    const { body } = await apiCall('GET', '/api/plugins');
    return body.plugins.some((p) => p.name === 'tenant-policy' && p.state === 'loaded');
  }, 60_000);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run'],
  });
});

after(async () => {
  if (browser) await browser.close();
  for (const child of children) child.kill('SIGTERM');
  if (work) rmSync(work, { recursive: true, force: true });
});

test('a bad token shows the API\'s sentence, and a tenant token is refused', async () => {
  const page = await newPage();
  await signIn(page, 'not-a-token');
  const error = page.locator('#sign-in-message .error');
  await error.waitFor();
  const sentence = await error.textContent();
  const { body } = await apiCall('GET', '/api/plugins', undefined, 'not-a-token');
  assert.equal(sentence, body.error, 'the page shows the API\'s own sentence');
  await shot(page, 'sign-in-bad-token');

  await page.locator('#token').fill(tenantToken);
  await page.locator('#token').press('Enter');
  await page.locator('#sign-in-message .error', { hasText: 'tenant' }).waitFor();
  assert.match(await error.textContent(), /tenants manage their sessions in the Portal/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a refused token is not kept');
  assert.equal(await page.locator('#nav').isHidden(), true);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('sign in, link a phone from the QR on the page, see it connect live, reset it with its report', async () => {
  const page = await newPage();
  await signIn(page, operatorToken);
  await page.locator('#sessions-summary', { hasText: 'No sessions yet.' }).waitFor();
  assert.ok(!page.url().includes(operatorToken), 'the token is never in the address');
  assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing in localStorage');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('lila.console.token')), operatorToken);

  // Created through the API, as the Portal would: the page picks it up by itself.
  const created = await apiCall('POST', '/api/sessions', { phoneNumber: PHONE, companyId: 'acme' });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const row = page.locator(`tr[data-phone="${PHONE}"]`);
  await row.waitFor({ timeout: 20_000 });
  assert.equal(await row.locator('td').nth(1).textContent(), 'acme');

  await row.locator('a').click();
  await page.locator('#qr[data-state="shown"] img').waitFor({ timeout: 20_000 });
  await shot(page, 'session-qr');
  const qr = await qrFromPage(page);
  assert.match(qr, /^2@/, 'a WhatsApp pairing QR');

  // Back to the list (no reload), then the phone scans: the row turns connected.
  await page.locator('#nav a[data-page="sessions"]').click();
  await row.waitFor();
  const navigations = [];
  page.on('framenavigated', (frame) => { if (frame === page.mainFrame()) navigations.push(frame.url()); });
  const scanned = await fetch(`${simAdmin}/admin/scan-qr?phone=${PHONE}`, { method: 'POST', body: qr });
  assert.equal(scanned.status, 200, await scanned.text());
  await page.locator(`tr[data-phone="${PHONE}"][data-status="connected"]`).waitFor({ timeout: 30_000 });
  assert.deepEqual(navigations, [], 'the row changed without a reload');
  assert.match(await row.locator('td').nth(4).textContent(), new RegExp(`^${PHONE}`), 'own JID shown');
  await shot(page, 'sessions');
  await page.screenshot({ path: join(SHOTS, 'sessions-1280.png') });

  // The session page: paired, so no QR; then the reset, confirmed by name.
  await row.locator('a').click();
  await page.locator('#qr[data-state="none"]', { hasText: 'paired' }).waitFor();
  await page.locator('#reset').focus();
  await page.keyboard.press('Enter');
  const dialog = page.locator('dialog.confirm');
  await dialog.waitFor();
  assert.match(await dialog.textContent(), new RegExp(`Reset \\+${PHONE}\\?`));
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  await page.locator('#reset').click();
  await shot(page, 'session-reset-confirm');
  await page.locator('#confirm-reset').click();

  const report = page.locator('#reset-report');
  await report.waitFor({ timeout: 20_000 });
  const text = await report.textContent();
  assert.match(text, /Logged out of WhatsAppyes/);
  assert.match(text, /Queued messages dropped0/);
  assert.ok(await report.locator('table.removed tbody tr').count() >= 3, 'files removed are listed');
  assert.match(await report.locator('table.removed').textContent(), /credentials|session/);
  const hook = report.locator('table.hooks tbody tr', { hasText: 'tenant-policy' });
  assert.match(await hook.textContent(), /before_clearok/);
  assert.match(await page.locator('.details-slot').textContent(), /This session was reset/);
  assert.equal(await page.locator('#pairing-code').isDisabled(), true);
  await shot(page, 'session-reset-report');

  await page.locator('#nav a[data-page="sessions"]').click();
  await page.locator('#sessions-summary', { hasText: 'No sessions yet.' }).waitFor({ timeout: 20_000 });
  assert.equal(await page.locator(`tr[data-phone="${PHONE}"]`).count(), 0, 'the row is gone');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('a plugin\'s veto shows its sentence, and nothing is removed', async () => {
  const created = await apiCall('POST', '/api/sessions', { phoneNumber: PROTECTED_PHONE, companyId: 'acme' });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const page = await newPage();
  await signIn(page, operatorToken);
  await page.locator(`tr[data-phone="${PROTECTED_PHONE}"] a`).click();
  await page.locator('#reset').click();
  await page.locator('#confirm-reset').click();
  const refused = page.locator('#reset-refused');
  await refused.waitFor({ timeout: 20_000 });
  assert.match(await refused.textContent(), /The reset was refused/);
  assert.match(await refused.textContent(), new RegExp(`Phone \\+${PROTECTED_PHONE} is protected by your reset policy`));
  await shot(page, 'session-reset-vetoed');
  const status = await apiCall('GET', `/api/sessions/${PROTECTED_PHONE}/status`);
  assert.equal(status.status, 200, 'the session is still there');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('the plugins and health pages read the API and /metrics', async () => {
  const page = await newPage();
  await signIn(page, operatorToken);
  await page.locator('#nav a[data-page="plugins"]').click();
  const plugin = page.locator('table.plugins tbody tr', { hasText: 'tenant-policy' });
  await plugin.waitFor();
  const text = await plugin.textContent();
  assert.match(text, /loaded/);
  assert.match(text, /closed/);
  // One veto (the test above) and one ok (the reset before it).
  assert.match(text, /1 \/ 1 \/ 0 \/ 0/);
  await shot(page, 'plugins');

  await page.locator('#nav a[data-page="health"]').click();
  const tile = (label) => page.locator('.tile', { hasText: label }).locator('.tile-value');
  await tile('Uptime').waitFor();
  assert.match(await tile('Uptime').textContent(), /\d+ (s|min|h|d)/);
  assert.equal(await tile('Completed').textContent(), '1');
  assert.equal(await tile('Vetoed by a plugin').textContent(), '1');
  await shot(page, 'health');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('10,000 sessions: one page of rows in the DOM, filters by tenant and status, phone width, dark', async () => {
  const page = await newPage({ viewport: { width: 390, height: 844 }, colorScheme: 'dark' });
  const statuses = ['connected', 'qr', 'reconnecting', 'stopped', 'failed'];
  const sessions = Array.from({ length: 10_000 }, (_, i) => ({
    phoneNumber: String(51_900_000_000 + i),
    companyId: `tenant-${i % 20}`,
    status: statuses[i % statuses.length],
    ready: i % statuses.length === 0,
    me: null,
    lastError: null,
    qrAvailable: false,
    pendingMessages: i % 3,
  }));
  // The listing is the only thing replaced; everything else is the real lila.
  await page.route('**/api/sessions', (route) => route.fulfill({
    contentType: 'application/json',
    body: JSON.stringify({ success: true, sessions }),
  }));
  await signIn(page, operatorToken);
  await page.locator('#sessions-summary', { hasText: '1–50 of 10000' }).waitFor();
  assert.equal(await page.locator('table.sessions tbody tr').count(), 50);
  await shot(page, 'sessions-10000-phone-dark');

  await page.locator('#filter-tenant').fill('tenant-7');
  await page.locator('#filter-status').selectOption('stopped');
  // tenant-7 holds i ≡ 7 (mod 20), so status index i mod 5 = 2 (reconnecting): none stopped.
  await page.locator('#sessions-summary', { hasText: 'No session matches' }).waitFor();
  await page.locator('#filter-status').selectOption('reconnecting');
  await page.locator('#sessions-summary', { hasText: '1–50 of 500 (filtered from 10000)' }).waitFor();
  const tenants = await page.locator('table.sessions tbody tr td:nth-child(2)').allTextContents();
  assert.deepEqual([...new Set(tenants)], ['tenant-7']);
  await page.getByRole('button', { name: 'Next →' }).click();
  await page.locator('#sessions-summary', { hasText: '51–100 of 500' }).waitFor();
  assert.equal(await page.locator('table.sessions tbody tr').count(), 50);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('with the event stream, a status shows as soon as its event arrives, and a reconnect resumes after the last id', async () => {
  const page = await newPage();
  const phone = '51922222222';
  // The listing always says `qr`: only the event can turn the row connected.
  await page.route('**/api/sessions', (route) => route.fulfill({
    contentType: 'application/json',
    body: JSON.stringify({ success: true, sessions: [{ phoneNumber: phone, companyId: 'acme', status: 'qr', ready: false, me: null, lastError: null, pendingMessages: 0 }] }),
  }));
  const streamRequests = [];
  await page.route('**/api/events', async (route) => {
    streamRequests.push(route.request().headers());
    // After the first listing, so that the event has a row to change.
    await new Promise((r) => setTimeout(r, 800));
    const data = { type: 'session.status', id: '7', at: Date.now(), tenant: 'acme', phone, status: 'connected', ready: true, lastError: null, me: `${phone}@s.whatsapp.net` };
    await route.fulfill({
      status: 200,
      contentType: 'text/event-stream',
      body: `: keep-alive\n\nevent: session.status\nid: 7\ndata: ${JSON.stringify(data)}\n\n`,
    });
  });
  await signIn(page, operatorToken);
  await page.locator(`tr[data-phone="${phone}"][data-status="connected"]`).waitFor({ timeout: 5000 });
  assert.equal(await page.locator(`tr[data-phone="${phone}"] .col-jid`).textContent(), `${phone}@s.whatsapp.net`, 'the own JID comes with the event');
  await waitFor('a second connection to the stream', () => streamRequests.length >= 2, 10_000);
  assert.equal(streamRequests[0].authorization, `Bearer ${operatorToken}`, 'the token goes in the header');
  assert.equal(streamRequests[0].accept, 'text/event-stream');
  assert.equal(streamRequests[0]['last-event-id'], undefined);
  assert.equal(streamRequests[1]['last-event-id'], '7', 'the reconnect resumes after the last event');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
