/**
 * Admin-socket input generators: HTTP requests (templates with a known status,
 * generated, mutated, pipelined, oversize headers and bodies, chunked bodies, nested
 * JSON, long paths and headers), random bytes, other protocols.
 */
import { Rng } from '../lib/prng.js';
import { mutate, randomString, type Vector } from './control-inputs.js';
import { u8 } from './msgpack.js';

const ADMIN_PATHS = ['/v1/status', '/v1/history', '/v1/jobs', '/v1/jobs/nope', '/v1/jobs/%00', '/v1/health', '/v1/history?limit=5', '/v1/history?limit=0', '/v1/history?limit=abc', '/v1/history?limit=99999', '/', '/v1', '/v1/', '/v2/status', '/v1/status?x=%zz', '/v1/../v1/status', '//v1/status', '/v1/status#frag', '*', 'http://baton/v1/status', '/v1/' + 'a'.repeat(3000)];
const METHODS = ['GET', 'HEAD', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'CONNECT', 'get', 'G ET', 'POST'];

export interface AdminInput {
  kind: string;
  bytes: Buffer;
  /** For unmutated templates: the status the daemon must answer. */
  expect?: number;
  /**
   * The answer may be lost to the client: the daemon rejects early (a bad method, header
   * overflow, a declared length over the limit) and closes while the rest of the input is
   * still being sent; our write then fails and Node drops what was received. A close
   * without an answer is fine then.
   */
  orClose?: boolean;
}

function httpRequest(method: string, target: string, headers: [string, string][], body = ''): string {
  return `${method} ${target} HTTP/1.1\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body}`;
}

function baseHeaders(rng: Rng, bodyLength?: number): [string, string][] {
  const h: [string, string][] = [['host', 'baton']];
  if (bodyLength !== undefined) h.push(['content-type', 'application/json'], ['content-length', String(bodyLength)]);
  if (rng.chance(0.3)) h.push(['x-baton-client-pid', rng.pick(['1', '-1', '1e99', 'abc', String(2 ** 53 + 1), ''])]);
  // Printable ASCII only: a template must stay a valid request (the claimed user is free text).
  if (rng.chance(0.3)) h.push(['x-baton-client-user', rng.chance(0.5) ? 'x'.repeat(rng.int(0, 200)) : randomString(rng, 20).replace(/[^\x20-\x7e]/g, '?')]);
  if (rng.chance(0.2)) h.push(['connection', rng.pick(['close', 'keep-alive', 'upgrade'])]);
  return h;
}

/** A template request the daemon must answer with a known status. */
export function adminTemplate(rng: Rng): AdminInput {
  switch (rng.int(0, 12)) {
    case 10: {
      // Nested JSON (issue #21 item 1): deeper than 32 levels is refused before parsing.
      const depth = rng.pick([1, 2, 16, 31, 32, 33, 64, 1000, 2400, 6000]);
      const body = `{"a":${'['.repeat(depth - 1)}0${']'.repeat(depth - 1)}}`;
      return { kind: 'nested-json', bytes: Buffer.from(httpRequest('GET', '/v1/status', baseHeaders(rng, body.length), body)), expect: depth > 32 ? 400 : 200 };
    }
    case 11:
      // A long path (under the 16 KiB header limit): an unknown endpoint, cut in the audit log.
      return { kind: 'long-path', bytes: Buffer.from(httpRequest('GET', `/v1/${'p'.repeat(rng.int(1_000, 15_000))}`, baseHeaders(rng))), expect: 404 };
    case 12:
      // Long header values (the claimed user, an unknown header): answered, cut where logged.
      return {
        kind: 'long-header',
        bytes: Buffer.from(httpRequest('GET', '/v1/history?limit=1', [...baseHeaders(rng), ['x-baton-client-user', 'u'.repeat(rng.int(100, 6_000))], ['x-filler', 'f'.repeat(rng.int(100, 6_000))]])),
        expect: 200,
      };
    case 0:
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', '/v1/status', baseHeaders(rng))), expect: 200 };
    case 1: {
      const limit = rng.int(1, 10_000);
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', `/v1/history?limit=${limit}`, baseHeaders(rng))), expect: 200 };
    }
    case 2:
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', rng.pick(['/v1/history?limit=0', '/v1/history?limit=abc', '/v1/history?limit=10001']), baseHeaders(rng))), expect: 400 };
    case 3:
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', rng.pick(['/nope', '/v2/status', '/v1/statuses', '/']), baseHeaders(rng))), expect: 404 };
    case 4:
      return { kind: 'template', bytes: Buffer.from(httpRequest(rng.pick(['PUT', 'DELETE', 'PATCH']), '/v1/status', baseHeaders(rng))), expect: 405 };
    case 5: {
      const body = rng.pick(['{', '[1,2]', '"x"', 'null', '{"a":', '\u0000', 'true']);
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', '/v1/status', baseHeaders(rng, Buffer.byteLength(body)), body)), expect: 400 };
    }
    case 6: {
      const n = 64 * 1024 + rng.int(1, 4096);
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', '/v1/status', baseHeaders(rng, n), 'x'.repeat(n))), expect: 413, orClose: true };
    }
    case 7: {
      // Chunked, over the body limit.
      const chunk = 'y'.repeat(16 * 1024);
      const body = `${Array.from({ length: 5 }, () => `${chunk.length.toString(16)}\r\n${chunk}\r\n`).join('')}0\r\n\r\n`;
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', '/v1/history', [['host', 'baton'], ['transfer-encoding', 'chunked']], body)), expect: 413, orClose: true };
    }
    case 8:
      // Over the 16 KiB header limit: the admin server answers every malformed request with 400.
      return { kind: 'template', bytes: Buffer.from(httpRequest('GET', '/v1/status', [...baseHeaders(rng), ['x-big', 'z'.repeat(17 * 1024)]])), expect: 400, orClose: true };
    default:
      return { kind: 'template', bytes: Buffer.from(`GARBAGE ${randomString(rng, 10).replace(/[\r\n ]/g, '')}\r\n\r\n`), expect: 400, orClose: true };
  }
}

function adminGenerated(rng: Rng): AdminInput {
  const method = rng.pick(METHODS);
  const target = rng.chance(0.8) ? rng.pick(ADMIN_PATHS) : `/${randomString(rng, 30).replace(/[\s]/g, '')}`;
  const headers = baseHeaders(rng);
  if (rng.chance(0.2)) headers.push(['content-length', rng.pick(['-1', '1e3', 'abc', '99999999999999999999', '0x10', ' 5', '5, 6'])]);
  if (rng.chance(0.15)) headers.push(['transfer-encoding', rng.pick(['chunked', 'gzip', 'chunked, chunked', 'identity'])]);
  if (rng.chance(0.1)) headers.push(['host', 'other']);
  if (rng.chance(0.1)) headers.push([randomString(rng, 10).replace(/[\s:]/g, '') || 'x', randomString(rng, 40).replace(/[\r\n]/g, '')]);
  if (rng.chance(0.05)) for (let i = 0; i < rng.int(50, 300); i++) headers.push([`h${i}`, 'v']);
  const body = rng.chance(0.3) ? rng.pick(['{}', '{"limit":5}', '{"deadlineS":-1}', '[]', '{"a":'.repeat(rng.int(1, 50)), '0\r\n\r\n', 'ZZ\r\n']) : '';
  const version = rng.chance(0.9) ? 'HTTP/1.1' : rng.pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/9.9', 'HTTP/1', 'http/1.1', '']);
  const text = `${method} ${target} ${version}\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body}`;
  return { kind: 'generated', bytes: Buffer.from(text, 'latin1') };
}

export function adminInput(rng: Rng, vectors: { valid: Vector[]; invalid: Vector[] }): AdminInput {
  switch (rng.weighted({ template: 20, generated: 25, mutated: 30, pipelined: 8, random: 7, 'non-http': 10 })) {
    case 'template':
      return adminTemplate(rng);
    case 'generated':
      return adminGenerated(rng);
    case 'mutated': {
      let b = rng.chance(0.5) ? adminTemplate(rng).bytes : adminGenerated(rng).bytes;
      for (let i = rng.int(1, 5); i > 0; i--) {
        b = rng.chance(0.2) ? Buffer.from(b.toString('latin1').replace(rng.pick(['\r\n', ' ', ':', 'HTTP/1.1', '\r\n\r\n']), rng.pick(['', '\n', '\r', '  ', '\t', '\r\n\r\n', '\u0000'])), 'latin1') : mutate(rng, b);
      }
      return { kind: 'mutated', bytes: b };
    }
    case 'pipelined':
      return { kind: 'pipelined', bytes: Buffer.concat(Array.from({ length: rng.int(2, 4) }, () => (rng.chance(0.7) ? adminTemplate(rng).bytes : adminGenerated(rng).bytes))) };
    case 'random':
      return { kind: 'random', bytes: rng.bytes(rng.int(1, 2048)) };
    default:
      // Other protocols on the admin socket: control frames, an HTTP/2 preface, a TLS ClientHello.
      return {
        kind: 'non-http',
        bytes: rng.pick([
          rng.pick(vectors.valid).bytes,
          Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
          Buffer.concat([u8(0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03), rng.bytes(64)]),
          Buffer.from('\r\n\r\n\r\n'),
        ]),
      };
  }
}
