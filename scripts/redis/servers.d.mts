// Type declarations for ./servers.mjs (real redis-server processes for tests and demos).

/** Absolute paths of the Redis binaries. */
export interface RedisBinaries {
  readonly server: string;
  readonly cli: string;
}

/**
 * Locate `redis-server` and `redis-cli`: env `REDIS_SERVER_BIN` / `REDIS_CLI_BIN`, else PATH,
 * else /usr/bin, /usr/local/bin, /opt/homebrew/bin. Throws an Error with install instructions.
 */
export function findRedisBinaries(): RedisBinaries;

/** A free TCP port on 127.0.0.1 (never one this process handed out recently). */
export function freePort(): Promise<number>;

/** `n` distinct free TCP ports on 127.0.0.1. */
export function freePorts(n: number): Promise<number[]>;

/** Where to send a command. `host` defaults to 127.0.0.1, `timeoutMs` to 2000. */
export interface RespTarget {
  readonly host?: string;
  readonly port: number;
  /** Sent with AUTH before the command. */
  readonly password?: string;
  readonly timeoutMs?: number;
}

/** An error reply (`-ERR ...`) from Redis. */
export class RespError extends Error {
  constructor(message: string);
}

/**
 * A decoded RESP2 reply: simple and bulk strings are strings (UTF-8), nil is null, integers are
 * numbers, arrays are arrays; an error reply nested inside an array is a RespError.
 */
export type RespValue = string | number | null | RespError | RespValue[];

/**
 * Send one command over a fresh connection (closed afterwards) and resolve with its reply.
 * Rejects with RespError on an error reply, and with an Error on connection failure or timeout.
 */
export function sendCommand(
  target: RespTarget,
  args: ReadonlyArray<string | number | Buffer>,
): Promise<RespValue>;

/** A server process started by this module. */
export interface ServerNode {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Pid at start time (a restarted server has a new one). */
  readonly pid: number;
  /** The server's own directory (`<baseDir>/<port>/`, holds redis.pid and redis.log). */
  readonly dir: string;
}

export interface StandaloneOptions {
  /** Parent directory; the server lives in `<baseDir>/<port>/`. */
  baseDir: string;
  /** Defaults to a free port. */
  port?: number;
  /** Set with `--requirepass`. */
  password?: string;
  /** Extra redis-server arguments, appended last, e.g. `['--maxmemory', '10mb']`. */
  args?: readonly string[];
  /** Readiness deadline, default 10000 ms. */
  timeoutMs?: number;
}

export interface StandaloneServer {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Current pid; updated by restart(). */
  readonly pid: number;
  /** `redis://127.0.0.1:<port>`, or `redis://:<password>@127.0.0.1:<port>` (password URI-encoded). */
  readonly url: string;
  readonly dir: string;
  readonly logFile: string;
  readonly password?: string;
  /** SIGTERM, wait until gone (SIGKILL after 5 s). No-op when not running. */
  stop(): Promise<void>;
  /** SIGKILL, wait until gone. No-op when not running. */
  kill(): Promise<void>;
  /** SIGSTOP: keeps its port, stops answering. */
  pause(): Promise<void>;
  /** SIGCONT. */
  resume(): Promise<void>;
  /** Start again with identical options and port (stops the current process first if it runs). */
  restart(): Promise<void>;
  toJSON(): {
    host: '127.0.0.1';
    port: number;
    pid: number;
    url: string;
    dir: string;
    logFile: string;
    password?: string;
  };
}

/** Start a standalone redis-server on 127.0.0.1 and wait until it answers PING. */
export function startStandalone(options: StandaloneOptions): Promise<StandaloneServer>;

export interface ClusterOptions {
  baseDir: string;
  /** At least 3 (redis-cli requirement). Default 3. */
  masters?: number;
  /** Default 1. */
  replicasPerMaster?: number;
  /** `--cluster-node-timeout` in ms (how soon a dead master is failed over), default 5000. */
  nodeTimeout?: number;
  /** Readiness deadline, default 30000 ms. */
  timeoutMs?: number;
}

export interface ClusterNode extends ServerNode {
  /** Cluster bus port (`--cluster-port`). */
  readonly busPort: number;
  /** Cluster node id. */
  readonly id: string;
  /** Role when the cluster became ready. */
  readonly role: 'master' | 'replica';
  /** Node id of the master (replicas), null for masters. */
  readonly masterId: string | null;
}

export interface ClusterTopology {
  /** All nodes, sorted by port. */
  readonly nodes: ClusterNode[];
  readonly masters: ClusterNode[];
  readonly replicas: ClusterNode[];
  /** Stop every node (replicas first), through their pidfiles. */
  stop(): Promise<void>;
}

/**
 * Start a Redis Cluster and wait until every node reports cluster_state:ok, every replica's link
 * is up, and every node's CLUSTER NODES and CLUSTER SLOTS show all nodes consistently.
 */
export function startCluster(options: ClusterOptions): Promise<ClusterTopology>;

export interface SentinelOptions {
  baseDir: string;
  /** Monitored master name, default 'mymaster'. */
  name?: string;
  /** Number of sentinels, default 3. */
  sentinels?: number;
  /** Default min(2, sentinels). */
  quorum?: number;
  /** Default 2000. */
  downAfterMilliseconds?: number;
  /** Default 10000. */
  failoverTimeout?: number;
  /** Readiness deadline, default 10000 ms. */
  timeoutMs?: number;
}

export interface SentinelTopology {
  readonly name: string;
  readonly quorum: number;
  /** The master at start time. */
  readonly master: ServerNode;
  /** The replica at start time. */
  readonly replica: ServerNode;
  readonly sentinels: ServerNode[];
  /** Stop sentinels and replica, then the master, through their pidfiles. */
  stop(): Promise<void>;
}

/**
 * Start a master, one replica and `sentinels` sentinels; wait until every sentinel sees the
 * replica and all other sentinels and the replica's link is up.
 */
export function startSentinel(options: SentinelOptions): Promise<SentinelTopology>;

export interface StopOptions {
  /** Time between SIGTERM and SIGKILL, default 5000 ms. */
  timeoutMs?: number;
}

/**
 * SIGTERM (and SIGCONT) `pid`, wait until it is gone (a zombie counts as gone), SIGKILL after
 * `timeoutMs`. Resolves true if the process was running, false if it was already gone.
 */
export function stopPid(pid: number, options?: StopOptions): Promise<boolean>;

/** Stop every server whose pidfile is under `baseDir`; resolves with the stopped pids. */
export function stopAll(baseDir: string, options?: StopOptions): Promise<number[]>;

/** Whether `pid` is a live process (zombies count as gone). */
export function isAlive(pid: number): boolean;

/**
 * Whether `pid` is a live redis-server process and, when `dir` is given, one running in `dir`
 * (the working-directory check is made on Linux only).
 */
export function isRedisProcess(pid: number, dir?: string): boolean;

export interface RunningServer {
  readonly pid: number;
  readonly dir: string;
  readonly pidFile: string;
}

/** Live redis servers whose pidfile is under `baseDir`. */
export function runningServers(baseDir: string): Promise<RunningServer[]>;

/** Files (and PEM text) made by `makeTlsCertificates`. */
export interface TlsCertificates {
  readonly dir: string;
  /** The CA that signed the server certificate. */
  readonly caFile: string;
  /** Server certificate for 127.0.0.1 (subjectAltName IP:127.0.0.1). */
  readonly certFile: string;
  readonly keyFile: string;
  /** An unrelated CA: a client trusting only it must reject the server. */
  readonly otherCaFile: string;
  /** PEM text of `caFile`. */
  readonly ca: string;
  /** PEM text of `otherCaFile`. */
  readonly otherCa: string;
}

/** Make a throw-away CA, a server certificate for 127.0.0.1 and a second CA, with openssl. */
export function makeTlsCertificates(options: { dir: string }): Promise<TlsCertificates>;

export interface TlsStandaloneOptions extends Omit<StandaloneOptions, 'port'> {
  /** Reuse certificates; made in `<baseDir>/tls/` when absent. */
  certificates?: TlsCertificates;
}

export interface TlsStandaloneServer extends StandaloneServer {
  /** The TLS port (the plain `port` stays open on loopback for setup commands). */
  readonly tlsPort: number;
  /** `rediss://127.0.0.1:<tlsPort>` */
  readonly tlsUrl: string;
  readonly certificates: TlsCertificates;
}

/** Start a standalone redis-server that also listens with TLS (client certificates not required). */
export function startTlsStandalone(options: TlsStandaloneOptions): Promise<TlsStandaloneServer>;

/** `ACL SETUSER <username> reset <rules...>`: an ACL user with exactly these rules. */
export function setAclUser(
  target: RespTarget,
  username: string,
  rules: ReadonlyArray<string>,
): Promise<RespValue>;

/** `ACL LOG` entries, most recent first, as field records (`reason`, `object`, `username`, ...). */
export function aclLog(
  target: RespTarget,
  count?: number,
): Promise<Array<Record<string, RespValue>>>;
