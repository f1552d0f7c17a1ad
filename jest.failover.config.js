import { createDefaultEsmPreset } from 'ts-jest';

/**
 * Failover specs: each starts its own Sentinel or Cluster topology and kills, fails over or
 * reshards it, so they run one at a time, after the main pass (scripts/test.sh), with no shared
 * servers. The global setup only gives them a directory for their servers and sweeps it after.
 * @type {import('jest').Config}
 */
export default {
  ...createDefaultEsmPreset({ tsconfig: 'tsconfig.json' }),
  testEnvironment: 'node',
  roots: ['<rootDir>/test/failover'],
  testRegex: '.*\\.failover-spec\\.ts$',
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  globalSetup: '<rootDir>/test/failover/global-setup.mjs',
  globalTeardown: '<rootDir>/test/failover/global-teardown.mjs',
  // A failed test runs once more, its first failure printed: see test/setup/retry-once.ts.
  setupFilesAfterEnv: ['<rootDir>/test/setup/retry-once.ts'],
  testTimeout: 90_000,
  maxWorkers: 1,
  // `npm test -- <pattern>` hands the pattern to every pass: one naming no failover spec must
  // not fail this one.
  passWithNoTests: true,
};
