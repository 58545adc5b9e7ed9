// Polling with back-off, the way pages stay current without the event stream.
// A round that changed nothing waits longer (up to `idleMaxMs`), a failed one
// doubles the wait (up to `errorMaxMs`), a change or `now()` goes back to the
// base. While the event stream is live, rounds only resynchronise, rarely.

import { isLive } from './events.js';

export class Poller {
  /**
   * `round()` resolves to true when something changed; a rejection counts as
   * a failure (the page shows it).
   */
  constructor(round, { baseMs = 2000, idleMaxMs = 15_000, errorMaxMs = 60_000, liveMs = 60_000 } = {}) {
    this.round = round;
    this.baseMs = baseMs;
    this.idleMaxMs = idleMaxMs;
    this.errorMaxMs = errorMaxMs;
    this.liveMs = liveMs;
    this.waitMs = baseMs;
    this.timer = null;
    this.stopped = false;
    this.running = false;
  }

  start() {
    this.stopped = false;
    this.now();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Runs a round at once (after a user action or an event) and resets the back-off. */
  now() {
    this.waitMs = this.baseMs;
    this.schedule(0);
  }

  schedule(ms) {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.timer = setTimeout(() => this.tick(), ms);
  }

  async tick() {
    if (this.stopped) return;
    if (this.running) {
      this.schedule(100);
      return;
    }
    this.running = true;
    try {
      const changed = await this.round();
      this.waitMs = changed ? this.baseMs : Math.min(Math.round(this.waitMs * 1.5), this.idleMaxMs);
    } catch {
      this.waitMs = Math.min(Math.max(this.waitMs, this.baseMs) * 2, this.errorMaxMs);
    } finally {
      this.running = false;
    }
    this.schedule(isLive() ? Math.max(this.liveMs, this.waitMs) : this.waitMs);
  }
}
