// A master, a replica and sentinels watching them.

import fsp from 'node:fs/promises';
import path from 'node:path';

import {
  DEFAULT_START_TIMEOUT_MS,
  HOST,
  LOG_FILE,
  PID_FILE,
  PROBE_TIMEOUT_MS,
} from './constants.mjs';
import {
  commonArgs,
  launchWithFreshPorts,
  logTails,
  parseInfo,
  remaining,
  requireBaseDir,
  stopNodesByDir,
  waitFor,
} from './launch.mjs';
import { findRedisBinaries } from './process.mjs';
import { RespError, sendCommands } from './resp.mjs';

// Sentinel
// ---------------------------------------------------------------------------

function confQuote(value) {
  return `"${String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function sentinelPairs(reply) {
  const out = {};
  if (Array.isArray(reply))
    for (let i = 0; i + 1 < reply.length; i += 2) out[reply[i]] = reply[i + 1];
  return out;
}

function validateSentinelOptions(name, sentinels, quorum) {
  if (!/^[A-Za-z0-9._-]+$/.test(name))
    throw new TypeError(`startSentinel: invalid master name ${JSON.stringify(name)}`);
  if (!Number.isInteger(sentinels) || sentinels < 1)
    throw new TypeError('startSentinel: sentinels must be an integer >= 1');
  if (!Number.isInteger(quorum) || quorum < 1 || quorum > sentinels) {
    throw new TypeError(`startSentinel: quorum must be an integer between 1 and ${sentinels}`);
  }
}

/** Launch a master (no `replicaOf`) or a replica of port `replicaOf`; `started` gets the node. */
async function startDataNode({ bin, base, deadline, started }, replicaOf) {
  const { pid, spec } = await launchWithFreshPorts(
    1,
    ([port]) => {
      const dir = path.join(base, String(port));
      const argv = [
        ...commonArgs(port, dir),
        ...(replicaOf ? ['--replicaof', HOST, String(replicaOf)] : []),
      ];
      return {
        bin,
        argv,
        port,
        dir,
        label: `${replicaOf ? 'replica' : 'master'} ${HOST}:${port}`,
      };
    },
    remaining(deadline),
  );
  const node = { host: HOST, port: spec.port, pid, dir: spec.dir };
  started.push(node);
  return node;
}

async function replicaLinkUp(replica) {
  const [info] = await sendCommands({ port: replica.port, timeoutMs: PROBE_TIMEOUT_MS }, [
    ['INFO', 'replication'],
  ]);
  const status = parseInfo(info).master_link_status;
  return status === 'up' ? true : `replica ${replica.port} master_link_status:${status}`;
}

/** Write `dir/sentinel.conf` for a sentinel on `port` monitoring the master; returns its path. */
async function writeSentinelConf(dir, port, monitor) {
  const { name, masterPort, quorum, downAfterMilliseconds, failoverTimeout } = monitor;
  await fsp.mkdir(dir, { recursive: true });
  const confFile = path.join(dir, 'sentinel.conf');
  const conf = [
    `port ${port}`,
    `bind ${HOST}`,
    'daemonize yes',
    `pidfile ${confQuote(path.join(dir, PID_FILE))}`,
    `logfile ${confQuote(path.join(dir, LOG_FILE))}`,
    `dir ${confQuote(dir)}`,
    `sentinel monitor ${name} ${HOST} ${masterPort} ${quorum}`,
    `sentinel down-after-milliseconds ${name} ${downAfterMilliseconds}`,
    `sentinel failover-timeout ${name} ${failoverTimeout}`,
    `sentinel parallel-syncs ${name} 1`,
    '',
  ].join('\n');
  await fsp.writeFile(confFile, conf, { mode: 0o644 });
  return confFile;
}

/** Launch `count` sentinels at once; `started` gets each one that came up. */
async function startSentinelNodes({ bin, base, deadline, started }, count, monitor) {
  const results = await Promise.allSettled(
    Array.from({ length: count }, () =>
      launchWithFreshPorts(
        1,
        async ([port]) => {
          const dir = path.join(base, String(port));
          const confFile = await writeSentinelConf(dir, port, monitor);
          return {
            bin,
            argv: [confFile, '--sentinel'],
            port,
            dir,
            label: `sentinel ${HOST}:${port}`,
          };
        },
        remaining(deadline),
      ).then(({ pid, spec }) => {
        const node = { host: HOST, port: spec.port, pid, dir: spec.dir };
        started.push(node);
        return node;
      }),
    ),
  );
  const failed = results.filter((r) => r.status === 'rejected');
  if (failed.length) throw failed[0].reason;
  return results.map((r) => r.value).sort((a, b) => a.port - b.port);
}

/** Add to `problems` what sentinel `s` does not see yet of the master `name` and its replica. */
async function checkSentinelView(s, { name, sentinels, replica }, problems) {
  const [masterReply, replicasReply] = await sendCommands(
    { port: s.port, timeoutMs: PROBE_TIMEOUT_MS },
    [
      ['SENTINEL', 'MASTER', name],
      ['SENTINEL', 'REPLICAS', name],
    ],
  );
  if (masterReply instanceof RespError)
    return problems.push(`sentinel ${s.port}: ${masterReply.message}`);
  const m = sentinelPairs(masterReply);
  if (m['num-slaves'] !== '1') problems.push(`sentinel ${s.port}: num-slaves ${m['num-slaves']}`);
  if (m['num-other-sentinels'] !== String(sentinels - 1)) {
    problems.push(`sentinel ${s.port}: num-other-sentinels ${m['num-other-sentinels']}`);
  }
  if (m.flags !== 'master') problems.push(`sentinel ${s.port}: master flags ${m.flags}`);
  const reps = Array.isArray(replicasReply) ? replicasReply.map(sentinelPairs) : [];
  const r = reps.find((x) => Number(x.port) === replica.port);
  if (!r || r.flags !== 'slave' || r['master-link-status'] !== 'ok') {
    problems.push(
      `sentinel ${s.port}: replica ${r ? `flags ${r.flags} link ${r['master-link-status']}` : 'unknown'}`,
    );
  }
}

/** `true` once the replica is linked and every sentinel sees it and the others; else why not. */
async function sentinelsReady(sentinelNodes, expected) {
  const problems = [];
  const link = await replicaLinkUp(expected.replica);
  if (link !== true) problems.push(link);
  await Promise.all(sentinelNodes.map((s) => checkSentinelView(s, expected, problems)));
  return problems.length === 0 ? true : problems.join('; ');
}

/**
 * Start a master, one replica (`--replicaof`) and `sentinels` sentinels monitoring it as `name`.
 */
export async function startSentinel({
  baseDir,
  name = 'mymaster',
  sentinels = 3,
  quorum = Math.min(2, sentinels),
  downAfterMilliseconds = 2000,
  failoverTimeout = 10_000,
  timeoutMs = DEFAULT_START_TIMEOUT_MS,
} = {}) {
  const base = requireBaseDir(baseDir, 'startSentinel');
  validateSentinelOptions(name, sentinels, quorum);
  const { server: bin } = findRedisBinaries();
  const deadline = Date.now() + timeoutMs;
  const started = []; // { host, port, pid, dir }
  const launch = { bin, base, deadline, started };

  try {
    const master = await startDataNode(launch, undefined);
    const replica = await startDataNode(launch, master.port);
    // Sentinels learn about replicas from the master's INFO (first one on connect, then every
    // 10 s), so the replica is linked before they start.
    await waitFor(
      deadline,
      `replica ${replica.port} of ${master.port}`,
      () => replicaLinkUp(replica),
      () => logTails([replica, master]),
    );

    const monitor = {
      name,
      masterPort: master.port,
      quorum,
      downAfterMilliseconds,
      failoverTimeout,
    };
    const sentinelNodes = await startSentinelNodes(launch, sentinels, monitor);
    await waitFor(
      deadline,
      `sentinels ${sentinelNodes.map((s) => s.port).join(',')} monitoring ${name}`,
      () => sentinelsReady(sentinelNodes, { name, sentinels, replica }),
      () => logTails([sentinelNodes[0], replica]),
    );

    const topology = {
      name,
      quorum,
      master,
      replica,
      sentinels: sentinelNodes,
      async stop() {
        await stopNodesByDir([...topology.sentinels, topology.replica]);
        await stopNodesByDir([topology.master]);
      },
    };
    return topology;
  } catch (error) {
    await stopNodesByDir(started).catch(() => {});
    throw error;
  }
}

// ---------------------------------------------------------------------------
