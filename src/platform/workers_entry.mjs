// The Workers entry module (wrangler.toml `main`; scripts/build-worker copies it to build/entry.mjs, beside
// worker-build's bundle build/index.js).
//
// worker-build's bundle exports a `WorkerEntrypoint` class behind a Proxy: the runtime constructs it for every
// request, and every method it looks up comes wrapped in another Proxy. That is there for one thing, recovery after
// the wasm instance crashed (a panic aborts it), and it took about 8% of a cached read's CPU time in profiles
// (class construction, the proxy traps) — what every Rust Worker built this way pays, Pier or empty.
//
// This module exports plain handlers instead and calls the class's own methods (each one calls the wasm export with
// `this.env` and `this.ctx`), keeping the recovery: the `worker` crate marks the instance as crashed in
// `globalThis.__worker_init_state` (its panic hook; a trap is caught here), and constructing the class once, which
// is what resets a crashed instance in worker-build's shim, happens before the next call.
import Entrypoint from "./index.js";

const methods = Entrypoint.prototype;

function crashed(e) {
  const state = globalThis.__worker_init_state;
  if (e instanceof WebAssembly.RuntimeError && state) {
    console.error("pier: the wasm instance crashed; it is reset before the next request", e);
    state.criticalError = true;
  }
}

function call(name, arg, env, ctx) {
  if (globalThis.__worker_init_state?.criticalError) {
    Reflect.construct(Entrypoint, [ctx, env]);
  }
  let out;
  try {
    out = methods[name].call({ env, ctx }, arg);
  } catch (e) {
    crashed(e);
    throw e;
  }
  if (out instanceof Promise) {
    return out.catch((e) => {
      crashed(e);
      throw e;
    });
  }
  return out;
}

export default {
  fetch: (request, env, ctx) => call("fetch", request, env, ctx),
  queue: (batch, env, ctx) => call("queue", batch, env, ctx),
  scheduled: (event, env, ctx) => call("scheduled", event, env, ctx),
};
