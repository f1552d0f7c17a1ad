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
};
