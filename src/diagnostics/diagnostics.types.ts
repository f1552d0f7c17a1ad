/** What one probe of `diagnostics()` could not learn, and why. */
export interface DiagnosticsProbeError {
  /** The command that failed (`INFO`, `SLOWLOG`, `LATENCY`). */
  command: string;
  /** The ACL refused it: grant `permission` to get this part. */
  denied: boolean;
  /** The ACL rule that would allow it, when denied. */
  permission?: string;
  /** What happened, without secrets. */
  message: string;
}

/** One slow log entry (`SLOWLOG GET`). */
export interface SlowlogEntry {
  id: number;
  at: Date;
  /** Execution time in microseconds. */
  durationMicros: number;
  /** The command and its arguments, each cut to 100 characters. */
  command: string[];
  /** The client's address and name, when Redis recorded them. */
  client?: string;
}

/** One latency event (`LATENCY LATEST`). */
export interface LatencyEvent {
  event: string;
  at: Date;
  latestMs: number;
  maxMs: number;
}

/** What `diagnostics()` learned about one master (the server, outside a cluster). */
export interface NodeDiagnostics {
  /** `host:port`. */
  address: string;
  version?: string;
  role?: string;
  /** Per replica: its offset and how many bytes it is behind this master. */
  replicas: Array<{ address: string; state: string; offset: number; lagBytes: number }>;
  memory?: {
    used: number;
    /** 0: no limit. */
    max: number;
    policy: string;
    fragmentationRatio: number | null;
  };
  keys?: { evicted: number; expired: number };
  persistence?: {
    rdbLastSaveAt: Date | null;
    rdbLastStatus: string;
    aofEnabled: boolean;
    aofLastWriteStatus: string | null;
  };
  clients?: { connected: number; blocked: number };
  slowlog: SlowlogEntry[];
  latency: LatencyEvent[];
  /** Probes that failed or were denied; the rest of the report stands. */
  errors: DiagnosticsProbeError[];
}

/** What `RedisService.diagnostics()` returns. */
export interface RedisDiagnostics {
  /** This registration's connections: open now, the `maxConnections` bound, and their ratio. */
  connections: { open: number; max: number; usage: number };
  nodes: NodeDiagnostics[];
}

/** Options of `RedisService.diagnostics()`. */
export interface DiagnosticsOptions {
  /** Bound of each probe, in ms. @defaultValue 1000 */
  timeout?: number;
  /** Slow log entries per node. @defaultValue 10 */
  slowlogEntries?: number;
}
