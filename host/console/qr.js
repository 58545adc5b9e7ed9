// The QR to link a phone: the PNG that `GET /api/sessions/{phone}/qr` renders,
// shown at a fixed size on white (dark mode too, so a phone can scan it from
// the screen), and swapped only when the code itself changes.

import { api, ApiError, sessionPath } from './api.js';
import { el, fill } from './dom.js';

export class QrPanel {
  constructor(phone) {
    this.phone = phone;
    this.current = null;
    this.image = el('img', { class: 'qr-image', alt: `QR code to link +${phone}`, width: 264, height: 264 });
    this.placeholder = el('p', { class: 'qr-placeholder' }, 'Loading the QR code…');
    this.box = el('div', { class: 'qr-box', 'aria-live': 'polite' }, this.placeholder);
    this.caption = el('figcaption', {},
      'On the phone: WhatsApp → Settings → Linked devices → Link a device, then point it at this code. ',
      'It changes every few seconds; this page follows it.');
    this.element = el('figure', { class: 'qr', id: 'qr' }, this.box, this.caption);
  }

  /** Shows a sentence instead of a code (the session is paired, or has none yet). */
  explain(sentence) {
    this.current = null;
    this.image.removeAttribute('src');
    this.placeholder.textContent = sentence;
    fill(this.box, this.placeholder);
    this.element.dataset.state = 'none';
  }

  /** Fetches the current QR; resolves to true when the code changed. */
  async refresh() {
    try {
      const body = await api('GET', sessionPath(this.phone, '/qr'));
      if (body.qr === this.current) return false;
      this.current = body.qr;
      this.image.src = body.qrImage;
      fill(this.box, this.image);
      this.element.dataset.state = 'shown';
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        this.explain(e.message);
        return false;
      }
      throw e;
    }
  }
}
