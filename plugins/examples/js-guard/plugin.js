// A lila reset plugin in JavaScript: refuses a reset while more messages are
// pending than `max_pending` allows, and once a phone has been reset
// `max_resets` times (counted in the state store, which outlives calls).
import { config, log } from 'lila:hooks/host@0.1.0';
import { stateGet, stateSet } from 'lila:hooks/state@0.1.0';

export const reset = {
  beforeClear(ctx) {
    const settings = JSON.parse(config());
    const pending = ctx.plan.outbox.length;
    if (pending > (settings.max_pending ?? 0)) {
      return { tag: 'veto', val: `${pending} message(s) are still waiting to be sent from +${ctx.phone}.` };
    }
    const done = Number(stateGet(`resets/${ctx.phone}`) ?? '0');
    const limit = settings.max_resets;
    if (limit !== undefined && done >= limit) {
      return { tag: 'veto', val: `Phone +${ctx.phone} has already been reset ${done} time(s) (js-guard allows ${limit}).` };
    }
    return { tag: 'allow' };
  },
  afterClear(report) {
    const key = `resets/${report.phone}`;
    const done = Number(stateGet(key) ?? '0');
    try {
      stateSet(key, String(done + 1));
    } catch (error) { // a `result` import throws on `err`, with the value in `payload`
      log('warn', `could not count the reset: ${error.payload}`);
    }
  },
};
