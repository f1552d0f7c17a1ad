import { createDefaultEsmPreset } from 'ts-jest';

/**
 * Second pass: the module and health specs against NestJS 11 + Terminus 11, installed in
 * compat/nest11 (own package.json and lockfile; `npm ci --prefix compat/nest11`).
 *
 * Same native ESM mode as jest.config.js (NODE_OPTIONS=--experimental-vm-modules, set by
 * scripts/test.sh): Nest 11 is CommonJS, which ESM jest imports fine, while the test support
 * and the global setup import ESM-only .mjs helpers that CommonJS jest could not require.
 *
 * Every `@nestjs/*` import — from the specs, from src/ and from inside the Nest packages
 * themselves — is mapped to compat/nest11, and so are `reflect-metadata` and `rxjs`: one copy of
 * each is loaded, so the decorator metadata src/ writes is read by the same Nest 11 core.
 * test/compat/nest11-versions.nest11-spec.ts fails the pass if a NestJS 12 module is loaded.
 * That file is not a `.spec.ts`, so jest.config.js (the NestJS 12 pass) does not pick it up.
 * @type {import('jest').Config}
 */
const compat = '<rootDir>/compat/nest11/node_modules';

export default {
  ...createDefaultEsmPreset({ tsconfig: 'tsconfig.json' }),
  displayName: 'nest11',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: [
    '<rootDir>/test/compat/*.nest11-spec.ts',
    '<rootDir>/test/e2e/module.e2e-spec.ts',
    '<rootDir>/test/e2e/health.e2e-spec.ts',
    '<rootDir>/test/e2e/named-connections.e2e-spec.ts',
  ],
  // `npm test -- <pattern>` hands the pattern to both passes: a pattern that only names
  // NestJS 12 specs (e.g. `topologies`) must not fail this one.
  passWithNoTests: true,
  moduleNameMapper: {
    '^(\\.{1,2}/.*)\\.js$': '$1',
    '^@nestjs/(.*)$': `${compat}/@nestjs/$1`,
    '^reflect-metadata$': `${compat}/reflect-metadata`,
    '^rxjs$': `${compat}/rxjs`,
    '^rxjs/(.*)$': `${compat}/rxjs/$1`,
  },
  // The same Redis servers as the main pass (scripts/test.sh runs this with
  // REDIS_TEST_TOPOLOGIES=standalone: these specs need only the standalone server).
  globalSetup: '<rootDir>/test/setup/global-setup.mjs',
  globalTeardown: '<rootDir>/test/setup/global-teardown.mjs',
  testTimeout: 30_000,
  maxWorkers: 2,
  // See jest.config.js: a busy parent must not mistake a worker's prompt exit for a hang.
  workerGracefulExitTimeout: 2_000,
};
