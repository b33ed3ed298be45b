import { defineConfig } from 'vitest/config';

// Suites spawn real processes and bind real sockets; on a 2-core machine we keep
// parallelism low so timing-sensitive suites (liveness, heartbeats) are not starved.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
  },
});
