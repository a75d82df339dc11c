// tests/e2e/bench.mjs — ds4-server overhead on the tiny random-weight model (the model's own
// compute is small, so these numbers are mostly HTTP + JSON + scheduling). Not a test: prints
// numbers for docs/BENCHMARKS.md. Run after tests/e2e/run.sh has built the model:
//   DS4_SERVER_BIN=./ds4-server DS4_E2E_MODEL=build/e2e/tiny-v4-vocab.gguf node tests/e2e/bench.mjs
import { spawn } from 'node:child_process';

const p = spawn(process.env.DS4_SERVER_BIN, ['-m', process.env.DS4_E2E_MODEL, '-c', '4096', '--port', '0', '-t', '1'],
  { stdio: ['ignore', 'ignore', 'pipe'] });
let log = '';
const port = await new Promise((resolve) => p.stderr.on('data', (d) => {
  log += d;
  const m = log.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
  if (m && log.includes('ready:')) resolve(Number(m[1]));
}));
const url = `http://127.0.0.1:${port}/v1/chat/completions`;
const ask = (body) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

let t0 = performance.now(), next = 0;
const N = 200;
await Promise.all(Array.from({ length: 16 }, async () => {
  while (next < N) { next++; await (await ask({ messages: [{ role: 'user', content: `q${next}` }], max_tokens: 1, think: false })).text(); }
}));
const rps = N / ((performance.now() - t0) / 1000);

const ttfb = [];
for (let i = 0; i < 20; i++) {
  t0 = performance.now();
  const r = await ask({ messages: [{ role: 'user', content: `stream ${i}` }], max_tokens: 8, think: false, stream: true });
  const rd = r.body.getReader();
  await rd.read();
  ttfb.push(performance.now() - t0);
  while (!(await rd.read()).done);
}
ttfb.sort((a, b) => a - b);

t0 = performance.now();
const r = await (await ask({ messages: [{ role: 'user', content: 'long answer' }], max_tokens: 256, think: false, temperature: 0 })).json();
const tps = r.usage.completion_tokens / ((performance.now() - t0) / 1000);
console.log(JSON.stringify({ requests_per_s_16_clients_1_token: +rps.toFixed(1), stream_first_byte_ms_median: +ttfb[10].toFixed(1),
  stream_first_byte_ms_p90: +ttfb[18].toFixed(1), decode_tokens_per_s_256: +tps.toFixed(1), completion_tokens: r.usage.completion_tokens }));
p.kill('SIGTERM');
