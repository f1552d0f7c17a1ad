import net from 'node:net';

/** Where a proxy forwards to. */
export interface ProxyTarget {
  host: string;
  port: number;
}

/** What the proxy has seen since it started. */
export interface ProxyCounts {
  /** Client connections accepted (refused ones included). */
  accepted: number;
  /** Chunks forwarded from a client to the server. */
  chunksToServer: number;
  /** Chunks forwarded from the server to a client. */
  chunksToClient: number;
  /** Chunks dropped: replies dropped on purpose and everything a black hole swallowed. */
  dropped: number;
}

/** How `dropReply` ends the connection whose reply it dropped. */
export type AfterDrop = 'reset' | 'blackhole';

/**
 * One direction of a connection: chunks leave in arrival order, each no earlier than its due
 * time, so added latency never reorders a stream.
 */
class Lane {
  private queue: Array<{ due: number; data: Buffer }> = [];
  private timer?: NodeJS.Timeout;

  constructor(private readonly dest: net.Socket) {}

  get queued(): number {
    return this.queue.length;
  }

  push(data: Buffer, delay: number): void {
    if (delay <= 0 && this.queue.length === 0) {
      this.write(data);
      return;
    }
    this.queue.push({ due: Date.now() + delay, data });
    if (!this.timer) this.schedule();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.queue = [];
  }

  private schedule(): void {
    const head = this.queue[0];
    if (!head) return;
    this.timer = setTimeout(() => this.flush(), Math.max(0, head.due - Date.now()));
  }

  private flush(): void {
    this.timer = undefined;
    const now = Date.now();
    while (this.queue.length && this.queue[0].due <= now) this.write(this.queue.shift()!.data);
    this.schedule();
  }

  private write(data: Buffer): void {
    if (!this.dest.destroyed) this.dest.write(data);
  }
}

interface Link {
  client: net.Socket;
  server?: net.Socket;
  toServer?: Lane;
  toClient?: Lane;
  /** Swallows everything both ways and never closes (a half-open connection). */
  blackholed: boolean;
}

interface Armed {
  match: string;
  then: AfterDrop;
  /** The connection whose request matched; its next reply is dropped. */
  link?: Link;
  resolve: () => void;
}

/**
 * A loopback TCP proxy between a Redis client and a real server that injects the faults a
 * network produces: added latency, a lost reply followed by a reset, a half-open (black-holed)
 * connection, resets and refused connections. Tests point a client at `proxy.url` instead of
 * the server and start and close the proxy themselves.
 */
export class FaultProxy {
  /** Chunks and connections seen so far. */
  readonly counts: ProxyCounts = { accepted: 0, chunksToServer: 0, chunksToClient: 0, dropped: 0 };
  private readonly links = new Set<Link>();
  private latency = 0;
  private holeAll = false;
  private refusing = false;
  private armed?: Armed;

  private constructor(
    private readonly listener: net.Server,
    private readonly target: ProxyTarget,
    /** The loopback address clients connect to. */
    readonly host: string,
    /** The port clients connect to. */
    readonly port: number,
  ) {}

  /** Starts a proxy to `target` on a free loopback port. */
  static async start(target: ProxyTarget): Promise<FaultProxy> {
    const listener = net.createServer();
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(0, '127.0.0.1', () => {
        listener.off('error', reject);
        resolve();
      });
    });
    const { port } = listener.address() as net.AddressInfo;
    const proxy = new FaultProxy(listener, target, '127.0.0.1', port);
    listener.on('connection', (socket) => proxy.accept(socket));
    return proxy;
  }

  /** `redis://host:port` of the proxy, for options that take a URL. */
  get url(): string {
    return `redis://${this.host}:${this.port}`;
  }

  /** Open client connections. */
  get connections(): number {
    let open = 0;
    for (const link of this.links) if (!link.client.destroyed) open += 1;
    return open;
  }

  /** Chunks waiting in a latency queue, both directions. */
  get queued(): number {
    let n = 0;
    for (const link of this.links) n += (link.toServer?.queued ?? 0) + (link.toClient?.queued ?? 0);
    return n;
  }

  /** Delays every chunk, both ways, by `ms` (0: none); order is kept. */
  setLatency(ms: number): void {
    this.latency = Math.max(0, ms);
  }

  /**
   * Forwards the next client chunk that contains `match` (ASCII, case-insensitive), drops the
   * server's next chunk on that connection (the reply), then resets or black-holes that
   * connection. Resolves once the reply was dropped.
   */
  dropReply({ match, then = 'reset' }: { match: string; then?: AfterDrop }): Promise<void> {
    if (this.armed) throw new Error('FaultProxy.dropReply: a drop is already armed');
    return new Promise<void>((resolve) => {
      this.armed = { match: match.toLowerCase(), then, resolve };
    });
  }

  /**
   * Half-open: every current and new connection stays open but nothing is forwarded either
   * way, as when a peer vanished without a FIN or RST.
   */
  blackhole(): void {
    this.holeAll = true;
    for (const link of this.links) this.hole(link);
  }

  /** New connections pass again; a connection that was black-holed stays dead. */
  resume(): void {
    this.holeAll = false;
  }

  /** Resets (RST) every current connection. */
  resetAll(): void {
    for (const link of this.links) this.reset(link);
  }

  /** While `on`, new connections are reset as soon as they are accepted. */
  refuse(on: boolean): void {
    this.refusing = on;
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    this.armed = undefined;
    for (const link of this.links) this.reset(link);
    await new Promise<void>((resolve) => this.listener.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    this.counts.accepted += 1;
    client.on('error', () => {});
    if (this.refusing) {
      client.resetAndDestroy();
      return;
    }
    const link: Link = { client, blackholed: false };
    this.links.add(link);
    client.on('close', () => {
      link.server?.destroy();
      link.toServer?.stop();
      link.toClient?.stop();
      this.links.delete(link);
    });
    if (this.holeAll) {
      this.hole(link);
      client.on('data', () => (this.counts.dropped += 1));
      return;
    }
    const server = net.connect(this.target.port, this.target.host);
    server.setNoDelay(true);
    client.setNoDelay(true);
    link.server = server;
    link.toServer = new Lane(server);
    link.toClient = new Lane(client);
    server.on('error', () => {});
    server.on('close', () => {
      if (!link.blackholed) client.destroy();
    });
    client.on('data', (data: Buffer) => this.fromClient(link, data));
    server.on('data', (data: Buffer) => this.fromServer(link, data));
  }

  private fromClient(link: Link, data: Buffer): void {
    if (link.blackholed) {
      this.counts.dropped += 1;
      return;
    }
    const armed = this.armed;
    if (armed && !armed.link && data.toString('latin1').toLowerCase().includes(armed.match)) {
      armed.link = link;
    }
    this.counts.chunksToServer += 1;
    link.toServer!.push(data, this.latency);
  }

  private fromServer(link: Link, data: Buffer): void {
    if (link.blackholed) {
      this.counts.dropped += 1;
      return;
    }
    const armed = this.armed;
    if (armed?.link === link) {
      this.armed = undefined;
      this.counts.dropped += 1;
      if (armed.then === 'reset') this.reset(link);
      else this.hole(link);
      armed.resolve();
      return;
    }
    this.counts.chunksToClient += 1;
    link.toClient!.push(data, this.latency);
  }

  private hole(link: Link): void {
    link.blackholed = true;
    link.toServer?.stop();
    link.toClient?.stop();
    // The server side goes away quietly: the client must not learn of it.
    link.server?.removeAllListeners('data');
    link.server?.destroy();
  }

  private reset(link: Link): void {
    link.toServer?.stop();
    link.toClient?.stop();
    if (!link.client.destroyed) link.client.resetAndDestroy();
    link.server?.destroy();
  }
}
