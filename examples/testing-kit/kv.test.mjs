// node --test examples/testing-kit/kv.test.mjs   (after `npm run build`)
// The reference kv service under @baton-sh/baton/testing, from node:test.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createHarness, httpRequest } from '@baton-sh/baton/testing';

const app = fileURLToPath(new URL('../../dist/fixtures/kv/main.js', import.meta.url));
const acked = new Map(); // every write the service acknowledged
let h;

before(async () => {
  h = await createHarness({ command: [process.execPath, app], env: { KV_SHARDS: '2' } });
});
after(() => h.close()); // also runs when a test failed

async function put(key, value) {
  const r = await httpRequest(h.url, { method: 'PUT', path: `/kv/${key}`, body: value });
  assert.equal(r.status, 200, r.body);
  acked.set(key, value);
}

/** Keys whose acknowledged value is not readable any more. */
async function readBack(url) {
  const lost = [];
  for (const [key, value] of acked) {
    const r = await httpRequest(url, { method: 'GET', path: `/kv/${key}`, body: '' });
    if (r.status !== 200 || JSON.parse(r.body).value !== value) lost.push(key);
  }
  return lost;
}

test('a handoff commits and loses no acknowledged write', async () => {
  for (let i = 0; i < 20; i++) await put(`a${i}`, `v${i}`);
  const result = await h.handoff();
  assert.equal(result.outcome, 'committed', result.reason);
  const { pid } = await h.checkInvariants({ readBack });
  assert.equal(pid, result.newPid);
});

test('the incumbent dies in the middle of its seal: the successor is promoted', async () => {
  await put('b', 'before the crash');
  const { result, crashedPid } = await h.handoffWithCrash('incumbent.mid_seal');
  assert.equal(result.oldPid, crashedPid);
  await h.checkInvariants({ readBack });
});

test('the successor is SIGKILLed while the incumbent drains: abort, the incumbent serves on', async () => {
  await put('c', 'before the abort');
  const before = h.pids().incumbent;
  const killed = h.signalAt('draining', 'successor', 'SIGKILL'); // the moment the phase starts
  const result = await h.handoff();
  await killed;
  assert.equal(result.outcome, 'aborted');
  assert.equal((await h.checkInvariants({ readBack })).pid, before);
  await put('d', 'after the abort');
});
