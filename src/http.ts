/**
 * `@baton-sh/baton/http`: the HTTP side of a `Drainable`, done once. `HttpListeners` makes
 * one `http.Server` per listener baton passes (or gives a framework its `serverFactory`),
 * serves on `listenTarget`, drains without resetting keep-alive connections and listens
 * again after an aborted handoff; `httpDrainable` adds the app's seal and readiness;
 * `fastifyOptions` wires a fastify app. See docs/app.md "HTTP apps".
 */
export { HttpListeners, DEFAULT_IDLE_GRACE_MS, DEFAULT_KEEP_ALIVE_TIMEOUT_MS, DEFAULT_ACCEPT_FAN_OUT } from './http/listeners.js';
export type { HttpHandler, HttpListenersOptions, ListenerSource, AcceptFanOutOptions } from './http/listeners.js';
export { httpDrainable } from './http/drainable.js';
export type { HttpAppParts } from './http/drainable.js';
export { fastifyOptions } from './http/fastify.js';
export type { FastifyLike } from './http/fastify.js';
export { HttpAdapterError } from './os/errors.js';
