/**
 * The kv load for tests: the one client lives in bench/lib/kv-load.ts (the demo uses it
 * too); this adds the command that starts fixtures/kv from the built checkout.
 */
import path from 'node:path';
import { expect } from 'vitest';
import type { KvLoad } from '../../bench/lib/kv-load.js';
import { ROOT } from './engine.js';

export { FAILURE_CLASSES, failureClass, KvLoad, kvHealth, type FailureClass, type KvHealth, type KvLoadOptions } from '../../bench/lib/kv-load.js';

export const KV = ['node', path.join(ROOT, 'dist/fixtures/kv/main.js')];

/** Stops the load and asserts the outcome: no request failed, writes were acknowledged, none was lost or came back. */
export async function verifyLoad(load: KvLoad): Promise<void> {
  await load.stop();
  expect(load.failures, `failed requests: ${JSON.stringify(load.failures)}`).toEqual({});
  expect(load.ackedWrites).toBeGreaterThan(0);
  const { lost, resurrected } = await load.verify();
  expect(lost, 'lost acknowledged writes').toEqual([]);
  expect(resurrected).toEqual([]);
}
