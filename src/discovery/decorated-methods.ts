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
    if (typeof value === 'object') return JSON.stringify(value);
    const scalar = value as string | number | boolean | bigint | symbol;
    return String(scalar);
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
