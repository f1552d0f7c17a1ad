// Run only by jest.nest11.config.js (the name is not `*.spec.ts`, so jest.config.js skips it):
// proves that the second pass really runs on NestJS 11 + Terminus 11, with one copy of
// @nestjs/common, @nestjs/core and reflect-metadata shared by the specs, src/ and Nest itself.
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from '@jest/globals';
import { Injectable } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { HealthIndicatorService } from '@nestjs/terminus';

import { RedisHealthIndicator } from '../../src/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const compat = join(root, 'compat', 'nest11', 'node_modules') + sep;

// jest's createRequire resolves through the same moduleNameMapper as the imports above.
const fromSpec = createRequire(import.meta.url);
const fromSrc = createRequire(join(root, 'src', 'index.ts'));

function version(pkg: string): string {
  return (fromSpec(`${pkg}/package.json`) as { version: string }).version;
}

describe('NestJS 11 compatibility pass', () => {
  it('loads NestJS 11 and Terminus 11 from compat/nest11', () => {
    const versions = Object.fromEntries(
      ['common', 'core', 'testing', 'platform-express', 'terminus', 'config'].map((p) => [
        p,
        version(`@nestjs/${p}`),
      ]),
    );
    console.log(`nest11 pass loads: ${JSON.stringify(versions)}`);
    expect(versions.common).toMatch(/^11\./);
    expect(versions.core).toMatch(/^11\./);
    expect(versions.testing).toMatch(/^11\./);
    expect(versions['platform-express']).toMatch(/^11\./);
    expect(versions.terminus).toMatch(/^11\./);
    expect(versions.config).toMatch(/^4\./);
  });

  it('resolves @nestjs/*, reflect-metadata and rxjs to one copy, wherever they are imported from', () => {
    const coreDir = dirname(fromSpec.resolve('@nestjs/core/package.json'));
    const fromCore = createRequire(join(coreDir, 'index.js'));
    for (const id of ['@nestjs/common', '@nestjs/core', 'reflect-metadata', 'rxjs']) {
      const paths = [fromSpec.resolve(id), fromSrc.resolve(id), fromCore.resolve(id)];
      expect(new Set(paths).size).toBe(1);
      expect(paths[0].startsWith(compat)).toBe(true);
    }
    // The ESM import and a require are the same module instance.
    expect((fromSpec('@nestjs/common') as { Injectable: unknown }).Injectable).toBe(Injectable);
    expect((fromSpec('@nestjs/core') as { ModuleRef: unknown }).ModuleRef).toBe(ModuleRef);
  });

  it('the classes of src/ carry metadata naming the Nest 11 classes', () => {
    // RedisHealthIndicator is injected with ModuleRef by type: its design:paramtypes, written
    // by src/ through reflect-metadata, must point at the ModuleRef of Nest 11's core.
    const params = Reflect.getMetadata('design:paramtypes', RedisHealthIndicator) as unknown[];
    expect(params).toContain(ModuleRef);
  });

  it('has the Terminus 11 API (no attempt(), which came with Terminus 12)', () => {
    const indicator = new HealthIndicatorService().check('x');
    expect(typeof indicator.up).toBe('function');
    expect(typeof indicator.down).toBe('function');
    expect('attempt' in indicator).toBe(false);
  });
});
