// Settings shared by the scripts that start and stop local redis-server processes.

export const HOST = '127.0.0.1';
export const IS_LINUX = process.platform === 'linux';
export const PID_FILE = 'redis.pid';
export const LOG_FILE = 'redis.log';
export const POLL_MS = 25;
export const DEFAULT_START_TIMEOUT_MS = 10_000;
export const DEFAULT_CLUSTER_TIMEOUT_MS = 30_000;
export const DEFAULT_STOP_TIMEOUT_MS = 5_000;
export const KILL_GRACE_MS = 5_000;
export const PROBE_TIMEOUT_MS = 1_000;
export const CLUSTER_SLOTS = 16384;
export const EXTRA_BIN_DIRS = ['/usr/bin', '/usr/local/bin', '/opt/homebrew/bin'];
