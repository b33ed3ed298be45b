/** What each kind of step does to the world, and what it reports. */
import { CRASH_ENV, CRASH_MARKER_ENV } from '../../src/os/crashpoints.js';
import { lockHolder } from '../../src/os/lock.js';
import type { Step } from './schedule.js';
import { signal, sleep, Violation } from './util.js';
import { describeOutcome, HANDOFF_BOUND_MS, isOutcome, UNHEALTHY, type HandoffResultLine, type HostEvent, type World } from './world.js';

export async function runStep(w: World, step: Step): Promise<string> {
  switch (step.kind) {
    case 'delay':
      await sleep(step.ms);
      return 'slept';
    case 'handoff':
      return describeOutcome(await w.handoff());
    case 'bad-start': {
      const spec =
        step.how === 'exit'
          ? { command: [process.execPath, '-e', 'process.exit(3)'] }
          : { successorEnv: step.how === 'bad-env' ? { KV_SHARDS: 'not-a-number' } : UNHEALTHY };
      const ev = await w.handoff(spec);
      if (ev !== 'exit' && ev.event === 'result' && (ev.result as HandoffResultLine).outcome === 'committed') {
        throw new Violation(`a successor that ${step.how === 'unhealthy' ? 'reports unhealthy' : 'fails at start'} was committed`);
      }
      return describeOutcome(ev);
    }
    case 'crash':
      return crashStep(w, step);
    case 'kill':
    case 'stop':
      return signalStep(w, step);
    case 'concurrent':
      return concurrentStep(w, step);
  }
}

async function crashStep(w: World, step: Extract<Step, { kind: 'crash' }>): Promise<string> {
  w.coverage.deal(step.point);
  const trigger = step.abort ? { successorEnv: UNHEALTHY } : {};
  let outcome: string;
  if (step.role === 'incumbent') {
    // The point is armed in the process when it starts: the next incumbent carries it.
    const armed = await w.handoff({ successorEnv: { [CRASH_ENV]: step.point, [CRASH_MARKER_ENV]: w.markers } });
    if (armed === 'exit' || armed.event !== 'result' || (armed.result as HandoffResultLine).outcome !== 'committed') {
      return `arming handoff ${describeOutcome(armed)}; not triggered`;
    }
    outcome = describeOutcome(await w.handoff(trigger));
  } else if (step.role === 'successor') {
    outcome = describeOutcome(await w.handoff({ ...trigger, successorCrashPoint: step.point, crashMarkerDir: w.markers }));
  } else {
    w.host.send({ op: 'arm', point: step.point, markerDir: w.markers });
    const ev = await w.handoff(trigger);
    if (ev === 'exit') outcome = await w.restartHost();
    else {
      w.host.send({ op: 'arm' }); // not reached: disarm
      outcome = describeOutcome(ev);
    }
  }
  // An incumbent point may fire a moment after the handoff returned (e.g. after Committed).
  const fired = w.crashed(step.point) || (await sleep(300).then(() => w.crashed(step.point)));
  return `${outcome}; ${fired ? 'crashed' : 'point not reached'}`;
}

async function signalStep(w: World, step: Extract<Step, { kind: 'kill' | 'stop' }>): Promise<string> {
  const incumbent = (await lockHolder(w.dataDir))?.owner.pid;
  const act = async (pid: number | undefined): Promise<string> => {
    if (pid === undefined) return `no ${step.role} to signal`;
    if (step.kind === 'kill') return w.hit(pid, 'SIGKILL') ? `SIGKILL ${step.role} ${pid}` : `${step.role} ${pid} already gone`;
    if (!w.hit(pid, 'SIGSTOP', step.stopMs)) return `${step.role} ${pid} already gone`;
    await sleep(step.stopMs);
    signal(pid, 'SIGCONT');
    return `SIGSTOP ${step.role} ${pid} for ${step.stopMs} ms`;
  };
  const target = async (): Promise<number | undefined> =>
    step.role === 'supervisor' ? w.host.pid : step.role === 'incumbent' ? incumbent : w.successorPid(incumbent);

  if (step.phase === 'idle') {
    const did = await act(await target());
    if (step.role === 'supervisor' && step.kind === 'kill') return `${did}; ${await w.restartHost()}`;
    return did;
  }
  const from = w.host.send({ op: 'handoff', spec: {} });
  const reached = await w.host.wait(from, (e) => (e.event === 'phase' && e.phase === step.phase) || isOutcome(e), HANDOFF_BOUND_MS);
  if (reached === 'timeout') throw new Violation(`handoff neither reached ${step.phase} nor finished within ${HANDOFF_BOUND_MS} ms`);
  if (reached === 'exit') return `supervisor died before ${step.phase}; ${await w.restartHost()}`;
  if (isOutcome(reached.ev)) return `${describeOutcome(reached.ev)} before ${step.phase}`;
  await sleep(step.afterMs);
  // The handoff may have ended within afterMs: then the signal hits the idle supervisor or
  // the new incumbent (still chaos, but reported as what it was).
  const endedFirst = w.host.events.slice(from).some(isOutcome);
  const did = await act(await target());
  const ev = await w.outcome(from);
  if (ev === 'exit') return `${did}; ${await w.restartHost()}`;
  // A SIGKILLed supervisor is dead even when its outcome line came first.
  if (step.role === 'supervisor' && step.kind === 'kill') return `${describeOutcome(ev)}, then ${did}; ${await w.restartHost()}`;
  return endedFirst ? `${describeOutcome(ev)}, then ${did}` : `${did}; ${describeOutcome(ev)}`;
}

async function concurrentStep(w: World, step: Extract<Step, { kind: 'concurrent' }>): Promise<string> {
  const from = w.host.send({ op: 'handoff', spec: {} });
  if (step.phase !== 'at-once') {
    const reached = await w.host.wait(from, (e) => (e.event === 'phase' && e.phase === step.phase) || isOutcome(e), HANDOFF_BOUND_MS);
    if (typeof reached === 'string') throw new Violation(`handoff neither reached ${step.phase} nor finished (${reached})`);
  }
  w.host.send({ op: 'handoff', spec: {} });
  // Both outcomes, in the order the supervisor reported them.
  const outcomes: HostEvent[] = [];
  for (let i = from; outcomes.length < 2; ) {
    const r = await w.host.wait(i, isOutcome, HANDOFF_BOUND_MS);
    if (r === 'timeout') throw new Violation('two upgrade requests: not both answered in time');
    if (r === 'exit') throw new Violation('the supervisor died during two upgrade requests');
    outcomes.push(r.ev);
    i = r.index + 1;
  }
  const [a, b] = outcomes as [HostEvent, HostEvent];
  if (a.event === 'error') {
    if (a.code !== 'E_HANDOFF_IN_PROGRESS') throw new Violation(`second upgrade refused with ${String(a.code)}, expected E_HANDOFF_IN_PROGRESS`);
    return `second refused E_HANDOFF_IN_PROGRESS; first ${describeOutcome(b)}`;
  }
  // The first finished before the supervisor read the second request (its result line came
  // first): then the second is a handoff of its own, and must not overlap the first.
  if (b.event === 'error') throw new Violation(`second upgrade refused with ${String(b.code)} after the first had finished`);
  const r1 = a.result as HandoffResultLine;
  const r2 = b.result as HandoffResultLine;
  if (r2.startedAt < r1.endedAt) throw new Violation(`two handoffs overlapped: ${r1.id} until ${r1.endedAt}, ${r2.id} from ${r2.startedAt}`);
  return `first ${describeOutcome(a)} before the second arrived; second ${describeOutcome(b)}`;
}
