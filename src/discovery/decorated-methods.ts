import type { DiscoveryService, MetadataScanner } from '@nestjs/core';

/** A method found carrying our decorator metadata. */
export interface DecoratedMethod<M> {
  meta: M;
  method: (...args: unknown[]) => unknown;
  instance: object;
  /** `ClassName.method`, for error messages. */
  label: string;
}

/**
 * Finds every provider and controller method carrying `metadataKey` (written by a decorator
 * with `SetMetadata`) and replaces it on that instance with what `wrap` returns. Runs once at
 * startup; the decorators themselves register nothing anywhere.
 */
export function wrapDecoratedMethods<M>(
  discovery: DiscoveryService,
  scanner: MetadataScanner,
  metadataKey: string,
  wrap: (found: DecoratedMethod<M>) => (this: unknown, ...args: unknown[]) => unknown,
): number {
  let wrapped = 0;
  for (const wrapper of [...discovery.getProviders(), ...discovery.getControllers()]) {
    const instance = wrapper.instance as Record<string, unknown> | undefined;
    if (!instance || typeof instance !== 'object' || wrapper.isAlias) continue;
    const prototype = Object.getPrototypeOf(instance) as object | null;
    if (!prototype || prototype === Object.prototype) continue;
    for (const name of scanner.getAllMethodNames(prototype)) {
      const method = instance[name];
      if (typeof method !== 'function') continue;
      const meta = Reflect.getMetadata(metadataKey, method) as M | undefined;
      if (meta === undefined) continue;
      const label = `${instance.constructor.name}.${name}`;
      // An own property of the instance: the class and its prototype stay untouched.
      Object.defineProperty(instance, name, {
        configurable: true,
        writable: true,
        value: wrap({ meta, method: method as (...args: unknown[]) => unknown, instance, label }),
      });
      wrapped += 1;
    }
  }
  return wrapped;
}

/** A name built from a method's arguments: a `{0}` / `{1.id}` template, or a function. */
export type ArgumentTemplate = string | ((...args: never[]) => string);

/**
 * Builds a name (lock resource, cache key) from one call's arguments. `{0}` is the first
 * argument, `{1.id}` a property of the second; a missing value is an error naming the
 * placeholder, since silently locking or caching under "undefined" would merge unrelated calls.
 */
export function resolveTemplate(
  template: ArgumentTemplate,
  args: unknown[],
  where: string,
): string {
  if (typeof template === 'function') {
    const name = (template as (...a: unknown[]) => unknown)(...args);
    if (typeof name !== 'string' || name === '') {
      throw new TypeError(
        `${where}: the key function returned ${String(name)}, not a non-empty string`,
      );
    }
    return name;
  }
  return template.replace(/\{(\d+)((?:\.[\w$]+)*)\}/g, (_, index: string, path: string) => {
    let value: unknown = args[Number(index)];
    for (const part of path.split('.').filter(Boolean)) {
      value = value == null ? undefined : (value as Record<string, unknown>)[part];
    }
    if (value === undefined || value === null || value === '') {
      throw new TypeError(
        `${where}: "{${index}${path}}" in "${template}" is ${String(value)} for this call`,
      );
    }
    return typeof value === 'object' ? JSON.stringify(value) : String(value);
  });
}

/** Throws unless `template` is a non-empty string or a function. */
export function checkTemplate(decorator: string, template: unknown): void {
  if (typeof template !== 'function' && (typeof template !== 'string' || template === '')) {
    throw new TypeError(
      `${decorator}: the key must be a non-empty template string or a function, got ${String(template)}`,
    );
  }
}

/**
 * Finds every provider and controller method carrying `metadataKey`, without replacing it:
 * for decorators that register a method as a listener rather than change how it is called.
 */
export function findDecoratedMethods<M>(
  discovery: DiscoveryService,
  scanner: MetadataScanner,
  metadataKey: string,
): Array<DecoratedMethod<M>> {
  const found: Array<DecoratedMethod<M>> = [];
  const seen = new Set<object>();
  for (const wrapper of [...discovery.getProviders(), ...discovery.getControllers()]) {
    const instance = wrapper.instance as Record<string, unknown> | undefined;
    if (!instance || typeof instance !== 'object' || wrapper.isAlias) continue;
    // A provider exported under two tokens is one instance: listen once.
    if (seen.has(instance)) continue;
    seen.add(instance);
    const prototype = Object.getPrototypeOf(instance) as object | null;
    if (!prototype || prototype === Object.prototype) continue;
    for (const name of scanner.getAllMethodNames(prototype)) {
      const method = instance[name];
      if (typeof method !== 'function') continue;
      const meta = Reflect.getMetadata(metadataKey, method) as M | undefined;
      if (meta === undefined) continue;
      found.push({
        meta,
        method: method as (...args: unknown[]) => unknown,
        instance,
        label: `${instance.constructor.name}.${name}`,
      });
    }
  }
  return found;
}
