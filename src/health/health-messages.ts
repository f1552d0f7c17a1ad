/** Every message the health indicator reports, in one place. */
export const HEALTH_MESSAGES = {
  terminusMissing:
    'RedisHealthIndicator needs @nestjs/terminus: install it (npm i @nestjs/terminus) and import TerminusModule.',
  unknownConnection: (name: string) =>
    `no Redis connection named "${name}" is registered (RedisModule.forRoot({ name: '${name}', ... }))`,
  notReady: (status: string, lastError?: string) =>
    `connection is not ready (status: ${status})` + (lastError ? `; last error: ${lastError}` : ''),
  noPermission: (command: string, category: string) =>
    `the ACL user may not run ${command} (grant +${command.toLowerCase()}, or the whole ` +
    `${category} category, which also holds commands the module does not need)`,
  timeout: (ms: number) => `Redis did not answer within ${ms} ms`,
  slow: (latency: number, max: number) =>
    `PING took ${latency} ms, more than maxLatency (${max} ms)`,
  memory: (ratio: number, max: number, used: number, limit: number) =>
    `memory use ${(ratio * 100).toFixed(1)}% exceeds maxMemoryRatio ${(max * 100).toFixed(1)}% ` +
    `(used_memory ${used} of maxmemory ${limit} bytes)`,
  clusterState: (state: string) => `cluster_state is ${state}`,
} as const;
