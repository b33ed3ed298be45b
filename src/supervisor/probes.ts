/** The app's health probes as the supervisor sees them (ProbeReport, PROTOCOL.md 7.9). */
import { errorMessage } from '../os/errors.js';

export type ProbeState = 'OK' | 'DEGRADED' | 'CRITICAL' | 'UNKNOWN';
export interface ProbeEntry {
  name: string;
  status: ProbeState;
  message: string;
  details?: Record<string, unknown>;
  ms?: number;
}

const PROBE_STATES: readonly string[] = ['OK', 'DEGRADED', 'CRITICAL', 'UNKNOWN'];

/** ProbeReport.probes (JSON text) as entries; anything malformed becomes an UNKNOWN entry. */
export function parseProbes(text: string): ProbeEntry[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return [{ name: 'app', status: 'UNKNOWN', message: `unreadable ProbeReport: ${errorMessage(err)}` }];
  }
  if (!Array.isArray(raw)) return [{ name: 'app', status: 'UNKNOWN', message: 'unreadable ProbeReport: not an array' }];
  return raw.map((e: unknown, i): ProbeEntry => {
    const o = (e ?? {}) as Record<string, unknown>;
    const name = typeof o.name === 'string' ? o.name : `probe-${i}`;
    if (typeof o.status !== 'string' || !PROBE_STATES.includes(o.status)) return { name, status: 'UNKNOWN', message: `bad status ${JSON.stringify(o.status)}` };
    return {
      name,
      status: o.status as ProbeState,
      message: typeof o.message === 'string' ? o.message : '',
      ...(typeof o.details === 'object' && o.details !== null ? { details: o.details as Record<string, unknown> } : {}),
      ...(typeof o.ms === 'number' && { ms: o.ms }),
    };
  });
}
