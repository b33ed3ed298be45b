import type { BatonAppOptions } from '../app/app.js';
import { HttpAdapterError } from '../os/errors.js';
import type { HttpListeners } from './listeners.js';

/** What baton uses of a fastify instance (structural: baton never imports fastify). */
export interface FastifyLike {
  readonly server: unknown;
  ready(): PromiseLike<unknown>;
}

/**
 * The `startBaton` options a fastify app needs, for one made with
 * `Fastify({ serverFactory: web.serverFactory })` (so `web` owns its servers):
 * `warmUp` loads its plugins and routes (`app.ready()`) before this process says Hello,
 * off the handoff's write blackout.
 *
 *   const web = new HttpListeners({ idleGraceMs: 500 });
 *   const app = Fastify({ serverFactory: web.serverFactory });
 *   const baton = await startBaton({ drainable: httpDrainable(web, { seal, readiness }), ...fastifyOptions(web, app) });
 *
 * Never `app.listen()` (`web.serve(baton)` listens) and never `app.close()` to drain (it
 * resets idle keep-alive connections; baton drains `web`). Throws `E_HTTP_NOT_OURS` for
 * an app made without `web.serverFactory`.
 */
export function fastifyOptions(web: HttpListeners, app: FastifyLike): Required<Pick<BatonAppOptions, 'warmUp'>> {
  if (!web.owns(app.server)) {
    throw new HttpAdapterError('E_HTTP_NOT_OURS', 'fastifyOptions: the fastify app has its own server; make it with Fastify({ serverFactory: web.serverFactory })');
  }
  return { warmUp: async () => void (await app.ready()) };
}
