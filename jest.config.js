import { createDefaultEsmPreset } from 'ts-jest';

/**
 * NestJS 12 is ESM-only: jest runs in native ESM mode (NODE_OPTIONS=--experimental-vm-modules,
 * set by scripts/test.sh). ts-jest only transpiles; `npm test` type-checks with tsc first.
 * @type {import('jest').Config}
 */
export default {
  ...createDefaultEsmPreset({ tsconfig: 'tsconfig.json' }),
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testRegex: '.*\\.(spec|e2e-spec)\\.ts$',
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  globalSetup: '<rootDir>/test/setup/global-setup.mjs',
  setupFilesAfterEnv: ['<rootDir>/test/setup/retry-once.ts'],
  globalTeardown: '<rootDir>/test/setup/global-teardown.mjs',
  testTimeout: 30_000,
  // Two cores: one worker per core keeps Redis and Nest from starving each other.
  maxWorkers: 2,
  // How long jest waits for a worker to exit after its last spec before killing it (default
  // 500 ms). Traced on this suite: both workers exited with code 0 within 2 ms of being told
  // to, but the parent process, busy for 500 ms after sending the message, ran its kill timer
  // before it read their exits, and printed "A worker process has failed to exit gracefully".
  // A handle left open still keeps a worker alive past this, and is still reported.
  workerGracefulExitTimeout: 2_000,
};
