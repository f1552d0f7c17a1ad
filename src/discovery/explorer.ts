import { Injectable, Module } from '@nestjs/common';
import { DiscoveryModule, DiscoveryService, MetadataScanner } from '@nestjs/core';

import { DEFAULT_CONNECTION_NAME } from '../config/defaults.js';

/** A method found carrying one of our decorators' metadata. */
export interface DecoratedMethod<M> {
  /** What the decorator recorded (`SetMetadata`). */
  meta: M;
  /**
   * The method as it is on the instance now: already wrapped by another of our decorators when
   * the method carries two, so that wrapping it again composes them.
   */
  method: (...args: unknown[]) => unknown;
  /** The provider or controller instance the method belongs to. */
  instance: object;
  /** `ClassName.method`, for error messages. */
  label: string;
}

/** Builds the replacement of one decorated method from what was found. */
export type MethodWrapper<M> = (
  found: DecoratedMethod<M>,
) => (this: unknown, ...args: unknown[]) => unknown;

/**
 * What a service needs from the explorer: the methods carrying a metadata key, to listen with
 * them (`find`) or to replace them (`wrap`).
 */
export interface DecoratorExplorer {
  /** Every provider and controller method carrying `metadataKey`, left as it is. */
  find<M>(metadataKey: string): Array<DecoratedMethod<M>>;
  /**
   * Replaces every provider and controller method carrying `metadataKey` with what `wrapper`
   * returns, on its instance (the class and its prototype stay untouched). Returns how many.
   */
  wrap<M>(metadataKey: string, wrapper: MethodWrapper<M>): number;
}

/** One method of one instance, as the walk saw it before anything was wrapped. */
interface ExploredMethod {
  instance: Record<string, unknown>;
  name: string;
  /** The method the decorators wrote their metadata on (the prototype's). */
  original: (...args: unknown[]) => unknown;
  label: string;
}

/**
 * The explorer of a named connection's services. Method decorators are served by the default
 * connection's services: were every connection's service to wrap them, a `@Cacheable` method
 * would be cached once per connection.
 */
const NO_DECORATORS: DecoratorExplorer = {
  find: () => [],
  wrap: () => 0,
};

/**
 * The one walk over the application's providers and controllers that every method decorator
 * of the module uses (`@Cacheable`, `@CacheEvict`, `@WithLock`, `@Leader`, `@OnRedisMessage`,
 * `@OnStreamMessage`): done once, on first use (from a service's `onModuleInit`, when every
 * instance exists), and cached. An instance registered under two tokens is visited once. The
 * decorators only record metadata; nothing is registered anywhere as a side effect.
 */
@Injectable()
export class RedisDecoratorExplorer implements DecoratorExplorer {
  private explored?: ExploredMethod[];

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
  ) {}

  /** This explorer for the default connection's services; one finding nothing for the others. */
  forConnection(name: string): DecoratorExplorer {
    return name === DEFAULT_CONNECTION_NAME ? this : NO_DECORATORS;
  }

  find<M>(metadataKey: string): Array<DecoratedMethod<M>> {
    return this.matching<M>(metadataKey).map(({ found }) => found);
  }

  wrap<M>(metadataKey: string, wrapper: MethodWrapper<M>): number {
    const matches = this.matching<M>(metadataKey);
    for (const { name, found } of matches) {
      // An own property of the instance: the class and its prototype stay untouched.
      Object.defineProperty(found.instance, name, {
        configurable: true,
        writable: true,
        value: wrapper(found),
      });
    }
    return matches.length;
  }

  private matching<M>(metadataKey: string): Array<{ name: string; found: DecoratedMethod<M> }> {
    const matches: Array<{ name: string; found: DecoratedMethod<M> }> = [];
    for (const { instance, name, original, label } of this.methods()) {
      // Read from the prototype's method: a wrapper put on the instance carries no metadata.
      const meta = Reflect.getMetadata(metadataKey, original) as M | undefined;
      if (meta === undefined) continue;
      const method = instance[name];
      if (typeof method !== 'function') continue;
      matches.push({
        name,
        found: { meta, method: method as (...args: unknown[]) => unknown, instance, label },
      });
    }
    return matches;
  }

  private methods(): ExploredMethod[] {
    if (this.explored) return this.explored;
    const explored: ExploredMethod[] = [];
    const seen = new Set<object>();
    for (const wrapper of [...this.discovery.getProviders(), ...this.discovery.getControllers()]) {
      const instance = wrapper.instance as Record<string, unknown> | undefined;
      if (!instance || typeof instance !== 'object' || wrapper.isAlias) continue;
      // A provider exported under two tokens is one instance: wrapping it twice would run the
      // decorator twice per call.
      if (seen.has(instance)) continue;
      seen.add(instance);
      const prototype = Object.getPrototypeOf(instance) as object | null;
      if (!prototype || prototype === Object.prototype) continue;
      for (const name of this.scanner.getAllMethodNames(prototype)) {
        const original = (prototype as Record<string, unknown>)[name];
        if (typeof original !== 'function') continue;
        // Only methods some decorator wrote metadata on are kept: the walk stays small.
        if (Reflect.getMetadataKeys(original).length === 0) continue;
        explored.push({
          instance,
          name,
          original: original as (...args: unknown[]) => unknown,
          label: `${instance.constructor.name}.${name}`,
        });
      }
    }
    this.explored = explored;
    return explored;
  }
}

/**
 * Provides the one `RedisDecoratorExplorer` of the application. Every `RedisModule`
 * registration imports it; Nest keeps a single instance of a static module, so the providers
 * are walked once however many connections there are.
 */
@Module({
  imports: [DiscoveryModule],
  providers: [RedisDecoratorExplorer],
  exports: [RedisDecoratorExplorer],
})
export class RedisDiscoveryModule {}
