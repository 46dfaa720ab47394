// Times the wasm32 exports of lib.rs in Node (V8, like workerd): node run.mjs path/to/pier_wasm_auth_bench.wasm
import { readFileSync } from "node:fs";
const { instance } = await WebAssembly.instantiate(readFileSync(process.argv[2]), {});
const x = instance.exports;
const ms = (f) => { const t = performance.now(); f(); return performance.now() - t; };
console.log("bcrypt verify (one login), wasm32 in Node " + process.version);
for (let cost = 5; cost <= 12; cost++) {
  if (!x.make_hash(cost)) throw new Error("make_hash");
  x.verify_hash(); // warm up
  const runs = cost <= 9 ? 20 : 5;
  const times = [];
  for (let i = 0; i < runs; i++) times.push(ms(() => { if (!x.verify_hash()) throw new Error("verify"); }));
  times.sort((a, b) => a - b);
  console.log(`  cost ${String(cost).padStart(2)}: median ${times[times.length >> 1].toFixed(2)} ms`);
}
const n = 20000;
x.verify_tokens(1000);
const t = ms(() => { if (x.verify_tokens(n) !== n) throw new Error("tokens"); });
console.log(`HS256 verify + claims parse: ${(t * 1000 / n).toFixed(2)} µs per token`);
