// Live updates from `GET /api/events` (Server-Sent Events), when this lila
// has it. EventSource cannot send an Authorization header, so the stream is
// read with fetch() and parsed here. When the route is missing (404) or the
// stream breaks, pages keep polling; the stream is probed again later.

import { authorization, token } from './api.js';

const subscribers = new Set();
const liveListeners = new Set();
let live = false;
let controller = null;
let lastEventId = null;

/** `listener({type, id, data})` for every event; returns the unsubscribe function. */
export function subscribe(listener) {
  subscribers.add(listener);
  return () => subscribers.delete(listener);
}

/** `listener(live)` whenever the stream comes up or goes down. */
export function onLiveChange(listener) {
  liveListeners.add(listener);
  return () => liveListeners.delete(listener);
}

export function isLive() {
  return live;
}

function setLive(value) {
  if (live === value) return;
  live = value;
  for (const listener of liveListeners) listener(value);
}

/**
 * Splits SSE text into events. Keeps the unfinished tail between chunks;
 * returns the events completed by `chunk` (a blank line ends one).
 */
export class SseParser {
  constructor() {
    this.buffer = '';
    this.reset();
  }

  reset() {
    this.event = '';
    this.data = [];
    this.id = null;
  }

  push(chunk) {
    this.buffer += chunk;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop();
    const done = [];
    for (const line of lines) {
      if (line === '') {
        if (this.data.length > 0) {
          done.push({ type: this.event || 'message', id: this.id, data: this.data.join('\n') });
        }
        this.reset();
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') this.event = value;
      else if (field === 'data') this.data.push(value);
      else if (field === 'id') this.id = value;
    }
    return done;
  }
}

function dispatch(raw) {
  if (raw.id) lastEventId = raw.id;
  let data;
  try {
    data = JSON.parse(raw.data);
  } catch {
    return;
  }
  const event = { type: data.type || raw.type, id: raw.id, data };
  for (const listener of subscribers) listener(event);
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

async function follow(signal) {
  let backoffMs = 1000;
  while (!signal.aborted && token()) {
    let waitMs = backoffMs;
    try {
      const headers = { ...authorization(), Accept: 'text/event-stream' };
      if (lastEventId) headers['Last-Event-ID'] = lastEventId;
      const response = await fetch('/api/events', { headers, signal, cache: 'no-store' });
      const type = response.headers.get('content-type') || '';
      if (response.status === 200 && type.startsWith('text/event-stream') && response.body) {
        setLive(true);
        backoffMs = 1000;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        const parser = new SseParser();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const raw of parser.push(value)) dispatch(raw);
        }
      } else if (response.status === 404 || response.status === 405) {
        // This lila has no event stream: polling does the work; look again in a minute.
        waitMs = 60_000;
      }
    } catch {
      // A dropped connection: try again after the back-off.
    }
    setLive(false);
    await sleep(waitMs, signal);
    backoffMs = Math.min(backoffMs * 2, 30_000);
  }
}

export function startEvents() {
  stopEvents();
  controller = new AbortController();
  follow(controller.signal);
}

export function stopEvents() {
  if (controller) controller.abort();
  controller = null;
  lastEventId = null;
  setLive(false);
}
