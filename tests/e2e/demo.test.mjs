// tests/e2e/demo.test.mjs — `ds4-server --demo` (issue #6): with no model file it makes (once,
// cached under XDG_CACHE_HOME) the random-weight demo model with the real tokenizer, says
// loudly that the weights are random, and answers the official OpenAI client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';

const BIN = process.env.DS4_SERVER_BIN;
const WORK = process.env.DS4_E2E_WORK;
const TOKENIZER = process.env.DS4_E2E_TOKENIZER;

function startDemo(cache) {
  return new Promise((resolve, reject) => {
    const p = spawn(BIN, ['--demo', '--tokenizer', TOKENIZER, '-c', '2048', '--port', '0', '-t', '1'],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, XDG_CACHE_HOME: cache } });
    let log = '';
    let port = 0;
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error('demo server did not start:\n' + log)); }, 120000);
    p.stderr.on('data', (d) => {
      log += d.toString();
      const m = log.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) port = Number(m[1]);
      if (port && log.includes('ready:')) { clearTimeout(timer); resolve({ proc: p, port, log: () => log }); }
    });
    p.on('exit', (code) => { clearTimeout(timer); if (!port || !log.includes('ready:')) reject(new Error(`server exited ${code}:\n${log}`)); });
  });
}

function stop(s) {
  return new Promise((resolve) => {
    if (s.proc.exitCode !== null) return resolve(s.proc.exitCode);
    s.proc.on('exit', (code) => resolve(code));
    s.proc.kill('SIGTERM');
  });
}

test('ds4-server --demo makes, labels and serves the random-weight model', async () => {
  const cache = fs.mkdtempSync(path.join(WORK, 'demo-cache-'));
  const s = await startDemo(cache);
  try {
    assert.match(s.log(), /making the demo model once/);
    assert.match(s.log(), /RANDOM WEIGHTS/);
    assert.match(s.log(), /model=DEMO \(random weights\)/);
    const files = fs.readdirSync(path.join(cache, 'ds4'));
    assert.ok(files.some((f) => /^demo-.*\.gguf$/.test(f)), `cached model: ${files}`);
    const c = new OpenAI({ apiKey: 'none', baseURL: `http://127.0.0.1:${s.port}/v1`, maxRetries: 0 });
    const r = await c.chat.completions.create({ model: 'deepseek-v4-flash', max_tokens: 4, think: false,
      messages: [{ role: 'user', content: 'Say hi' }] });
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 4);
    assert.equal(typeof r.choices[0].message.content, 'string');
  } finally {
    assert.equal(await stop(s), 0, s.log());
  }
  // Second start: the cached file is served, nothing is rebuilt.
  const again = await startDemo(cache);
  try {
    assert.doesNotMatch(again.log(), /making the demo model/);
    assert.match(again.log(), /RANDOM WEIGHTS/);
  } finally {
    assert.equal(await stop(again), 0, again.log());
  }
  fs.rmSync(cache, { recursive: true, force: true });
});

test('--demo refuses a model path, --tokenizer needs --demo', () => {
  const both = spawnSync(BIN, ['--demo', '-m', 'x.gguf'], { encoding: 'utf8' });
  assert.equal(both.status, 2);
  assert.match(both.stderr, /--demo makes its own model/);
  const tok = spawnSync(BIN, ['--tokenizer', TOKENIZER], { encoding: 'utf8' });
  assert.equal(tok.status, 2);
  assert.match(tok.stderr, /--tokenizer only builds the --demo model/);
});
