/**
 * The kv load for tests: the one client lives in bench/lib/kv-load.ts (the demo uses it
 * too); this adds the command that starts fixtures/kv from the built checkout.
 */
import path from 'node:path';
import { ROOT } from './engine.js';

export { FAILURE_CLASSES, failureClass, KvLoad, kvHealth, type FailureClass, type KvHealth, type KvLoadOptions } from '../../bench/lib/kv-load.js';

export const KV = ['node', path.join(ROOT, 'dist/fixtures/kv/main.js')];
