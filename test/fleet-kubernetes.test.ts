/**
 * The Kubernetes example (examples/kubernetes, issue 24), checked without a cluster:
 * every manifest parses (js-yaml, the YAML parser the lockfile already has), the
 * StatefulSet, its ConfigMap and its probes agree with each other and with baton (the
 * config passes baton's own validator; the state dir, data dir and releases are on the
 * volume; the grace period covers preStop and baton's stop timeout), and the probe
 * commands are run as the kubelet would run them, against a real `baton run` of
 * fixtures/kv: readiness passes for OK and DEGRADED and fails for CRITICAL, liveness
 * passes while the supervisor answers and fails once it is gone.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveRunConfig } from '../src/daemon/config.js';
import { CLI, CLI_NODE_ARGS, collect, useCliWorlds, writeScript } from './support/cli.js';
import { ROOT } from './support/engine.js';
import { Harness } from './support/harness.js';
import { KV } from './support/kv-load.js';

const yaml = createRequire(import.meta.url)('js-yaml') as { loadAll(text: string): unknown[] };
const DIR = path.join(ROOT, 'examples/kubernetes');

const h = new Harness();
const worlds = useCliWorlds(h);

interface Probe {
  exec?: { command: string[] };
  periodSeconds?: number;
  timeoutSeconds?: number;
  failureThreshold?: number;
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  env?: { name: string; value: string }[];
  ports?: { name: string; containerPort: number }[];
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  volumeMounts?: { name: string; mountPath: string }[];
}
interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  data?: Record<string, string>;
  spec?: {
    serviceName?: string;
    selector?: { matchLabels?: Record<string, string> } | Record<string, string>;
    ports?: { name: string; port: number; targetPort: string | number }[];
    template?: {
      metadata: { labels: Record<string, string> };
      spec: {
        terminationGracePeriodSeconds?: number;
        initContainers?: Container[];
        containers: Container[];
        volumes?: { name: string; configMap?: { name: string } }[];
      };
    };
    volumeClaimTemplates?: { metadata: { name: string } }[];
  };
}

function manifests(): Manifest[] {
  const files = readdirSync(DIR).filter((f) => /\.ya?ml$/.test(f));
  expect(files.sort()).toEqual(['configmap.yaml', 'service.yaml', 'statefulset.yaml']);
  return files.flatMap((f) => yaml.loadAll(readFileSync(path.join(DIR, f), 'utf8')) as Manifest[]);
}

/** Is `p` at or below `dir`? */
const under = (p: string, dir: string): boolean => p === dir || p.startsWith(`${dir.replace(/\/$/, '')}/`);

describe('the Kubernetes example (examples/kubernetes)', () => {
  it('parses, and the StatefulSet, its config and its probes agree with each other and with baton', () => {
    const all = manifests();
    for (const m of all) {
      expect(m.apiVersion, JSON.stringify(m).slice(0, 80)).toMatch(/^(v1|apps\/v1)$/);
      expect(m.metadata.name).toMatch(/^[a-z0-9-]+$/);
    }
    const sts = all.find((m) => m.kind === 'StatefulSet')!;
    const cm = all.find((m) => m.kind === 'ConfigMap')!;
    const services = all.filter((m) => m.kind === 'Service');
    expect(sts && cm).toBeTruthy();
    const pod = sts.spec!.template!.spec;
    const labels = sts.spec!.template!.metadata.labels;
    expect(sts.spec!.selector).toEqual({ matchLabels: labels });
    for (const s of services) expect(s.spec!.selector).toEqual(labels);
    expect(services.map((s) => s.metadata.name)).toContain(sts.spec!.serviceName);
    const [app] = pod.containers;

    // baton run is the entrypoint, with the ConfigMap's file.
    const cmd = app!.command!;
    const run = cmd.indexOf('run');
    expect(cmd[run - 1]).toBe('baton');
    const configPath = cmd[cmd.indexOf('--config') + 1]!;
    const configVolume = pod.volumes!.find((v) => v.configMap?.name === cm.metadata.name)!;
    const configMount = app!.volumeMounts!.find((m) => m.name === configVolume.name)!;
    expect(path.dirname(configPath)).toBe(configMount.mountPath);
    const config = JSON.parse(cm.data![path.basename(configPath)]!) as { command: string[]; dataDir: string; stateDir: string; stopTimeoutS: number; listen: string[] };

    // It passes baton's own validation (the paths are checked on this machine elsewhere below).
    const file = path.join(h.tempDir('baton-k8s-'), 'baton.json');
    writeFileSync(file, JSON.stringify(config));
    const resolved = resolveRunConfig({ config: file, dataDir: path.dirname(file), stateDir: path.join(path.dirname(file), 'state') });
    expect(resolved.stopTimeoutS).toBe(config.stopTimeoutS);
    expect(resolved.listen[0]).toMatchObject({ kind: 'tcp', port: app!.ports![0]!.containerPort });

    // Data, state and the release link live on the pod's volume (they outlive a container restart).
    const volume = sts.spec!.volumeClaimTemplates![0]!.metadata.name;
    const dataMount = app!.volumeMounts!.find((m) => m.name === volume)!.mountPath;
    for (const p of [config.dataDir, config.stateDir, config.command[0]!]) expect(under(p, dataMount), p).toBe(true);
    expect(pod.initContainers![0]!.volumeMounts).toEqual([{ name: volume, mountPath: dataMount }]);
    // The client commands (probes, kubectl exec) find the same supervisor.
    expect(app!.env).toContainEqual({ name: 'BATON_STATE_DIR', value: config.stateDir });

    // Probes come from baton; the grace period covers preStop and baton's stop.
    expect(app!.readinessProbe!.exec!.command.join(' ')).toMatch(/\bbaton health\b/);
    expect(app!.livenessProbe!.exec!.command).toEqual(['baton', 'status']);
    expect(app!.startupProbe!.exec!.command).toEqual(['baton', 'status']);
    const preStop = app!.lifecycle!.preStop!.exec!.command;
    expect(preStop[0]).toBe('sleep');
    expect(pod.terminationGracePeriodSeconds!).toBeGreaterThanOrEqual(Number(preStop[1]) + config.stopTimeoutS + 5);

    // The init container's script is valid sh.
    const init = pod.initContainers![0]!.command!;
    expect(init.slice(0, 2)).toEqual(['sh', '-ec']);
    const syntax = spawnSync('sh', ['-n', '-c', init[2]!], { encoding: 'utf8' });
    expect(syntax.status, syntax.stderr).toBe(0);
  });

  it('its probe commands, run as the kubelet runs them against a real baton run: readiness passes for OK and DEGRADED and fails for CRITICAL; liveness fails once the supervisor is gone', { timeout: 180_000 }, async () => {
    const app = manifests().find((m) => m.kind === 'StatefulSet')!.spec!.template!.spec.containers[0]!;
    const dir = h.tempDir('baton-k8s-');
    // `baton` on the PATH, as in the image.
    const bin = path.join(dir, 'bin');
    mkdirSync(bin);
    writeScript(path.join(bin, 'baton'), `exec ${process.execPath} ${CLI_NODE_ARGS.join(' ')} ${CLI} "$@"`);
    const override = path.join(dir, 'health');
    writeFileSync(override, 'OK');
    const d = await worlds.w.startDaemon({ dir, command: KV, env: { KV_PROBE_OVERRIDE: override } });
    const probe = async (p: Probe): Promise<number | null> => {
      const [command, ...args] = p.exec!.command;
      const child = h.spawn(command!, args, { env: worlds.w.env({ PATH: `${bin}:${process.env.PATH}`, BATON_STATE_DIR: d.stateDir }) });
      return (await collect(child, p.timeoutSeconds! * 1000)).code;
    };
    const plainHealth = async (): Promise<number | null> => (await worlds.w.baton(['health', '--state-dir', d.stateDir])).code;

    try {
      expect(await probe(app.startupProbe!)).toBe(0);
      expect(await probe(app.readinessProbe!)).toBe(0);
      expect(await probe(app.livenessProbe!)).toBe(0);
      writeFileSync(override, 'DEGRADED 9 MiB of dead records; run compaction');
      expect(await plainHealth()).toBe(2);
      expect(await probe(app.readinessProbe!)).toBe(0);
      writeFileSync(override, 'CRITICAL cannot reach the payments database');
      expect(await probe(app.readinessProbe!)).not.toBe(0);
      expect(await probe(app.livenessProbe!)).toBe(0); // the app's health is baton's business, not a reason to restart the container
    } finally {
      await worlds.w.stop(d);
    }
    expect(await probe(app.livenessProbe!)).not.toBe(0);
    expect(await probe(app.readinessProbe!)).not.toBe(0);
  });
});
