# A lila reset plugin in Python: refuses a reset while more messages are
# pending than `max_pending` allows, and once a phone has been reset
# `max_resets` times (counted in the state store, which outlives calls).
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, state
from wit_world.imports.types import Decision_Allow, Decision_Veto


class Reset(exports.Reset):
    def before_clear(self, ctx):
        config = json.loads(host.config())
        pending = len(ctx.plan.outbox)
        if pending > config.get("max_pending", 0):
            return Decision_Veto(f"{pending} message(s) are still waiting to be sent from +{ctx.phone}.")
        done = int(state.state_get(f"resets/{ctx.phone}") or "0")
        limit = config.get("max_resets")
        if limit is not None and done >= limit:
            return Decision_Veto(f"Phone +{ctx.phone} has already been reset {done} time(s) (python-guard allows {limit}).")
        return Decision_Allow()

    def after_clear(self, report):
        key = f"resets/{report.phone}"
        done = int(state.state_get(key) or "0")
        try:
            state.state_set(key, str(done + 1))
        except Err as error:  # a `result` import raises Err on `err`
            host.log(host.LogLevel.WARN, f"could not count the reset: {error.value}")
