// A Redis Cluster of masters and replicas, each node on its own free port and bus port.

import fsp from 'node:fs/promises';
import path from 'node:path';

import { CLUSTER_SLOTS, DEFAULT_CLUSTER_TIMEOUT_MS, HOST, PROBE_TIMEOUT_MS } from './constants.mjs';
import {
  commonArgs,
  execFileText,
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

// Cluster
// ---------------------------------------------------------------------------

function parseClusterNodes(text) {
  return String(text ?? '')
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((line) => {
      const [id, addr, flags, master, , , , link, ...slots] = line.split(' ');
      const flagList = flags.split(',');
      const port = Number(/:(\d+)@/.exec(addr)?.[1]);
      return {
        id,
        port,
        flags: flagList,
        myself: flagList.includes('myself'),
        role: flagList.includes('master')
          ? 'master'
          : flagList.includes('slave')
            ? 'replica'
            : 'unknown',
        masterId: master === '-' ? null : master,
        link,
        slots: slots.filter((s) => !s.startsWith('[')).join(' '),
      };
    });
}

const BAD_NODE_FLAGS = ['fail', 'fail?', 'handshake', 'noaddr'];

async function probeClusterNode(node, timeoutMs) {
  const [info, nodes, slots, replication] = await sendCommands({ port: node.port, timeoutMs }, [
    ['CLUSTER', 'INFO'],
    ['CLUSTER', 'NODES'],
    ['CLUSTER', 'SLOTS'],
    ['INFO', 'replication'],
  ]);
  for (const r of [info, nodes, slots, replication]) if (r instanceof RespError) throw r;
  return {
    info: parseInfo(info),
    nodes: parseClusterNodes(nodes),
    slots,
    replication: parseInfo(replication),
  };
}

// Returns a list of problems (empty when the cluster is ready and every node agrees).
function clusterProblems(probes, total, replicasPerMaster) {
  const problems = [];
  const truth = new Map(); // id -> own view of itself
  for (const p of probes) {
    const me = p.nodes.find((n) => n.myself);
    if (me) truth.set(me.id, me);
  }
  for (const p of probes) {
    const at = `node ${p.port}`;
    if (p.info.cluster_state !== 'ok')
      problems.push(`${at}: cluster_state:${p.info.cluster_state}`);
    if (p.info.cluster_slots_ok !== String(CLUSTER_SLOTS))
      problems.push(`${at}: cluster_slots_ok:${p.info.cluster_slots_ok}`);
    if (p.info.cluster_known_nodes !== String(total))
      problems.push(`${at}: cluster_known_nodes:${p.info.cluster_known_nodes}`);
    const me = p.nodes.find((n) => n.myself);
    if (me?.role === 'replica' && p.replication.master_link_status !== 'up') {
      problems.push(`${at}: master_link_status:${p.replication.master_link_status}`);
    }
    if (p.nodes.length !== total)
      problems.push(`${at}: CLUSTER NODES lists ${p.nodes.length}/${total}`);
    for (const n of p.nodes) {
      const bad = n.flags.filter((f) => BAD_NODE_FLAGS.includes(f));
      if (bad.length) problems.push(`${at}: sees ${n.port} as ${bad.join(',')}`);
      if (n.link !== 'connected') problems.push(`${at}: link to ${n.port} ${n.link}`);
      const t = truth.get(n.id);
      if (!t) problems.push(`${at}: knows unknown node ${n.id}`);
      else if (
        t.role !== n.role ||
        t.masterId !== n.masterId ||
        (t.role === 'master' && t.slots !== n.slots)
      ) {
        problems.push(`${at}: stale view of ${n.port}`);
      }
    }
    // CLUSTER SLOTS is what clients use: every range must list its master and all its replicas
    // (replicas appear there only once their replication offset has been gossiped).
    let covered = 0;
    for (const range of Array.isArray(p.slots) ? p.slots : []) {
      covered += range[1] - range[0] + 1;
      if (range.length - 2 !== 1 + replicasPerMaster) {
        problems.push(
          `${at}: CLUSTER SLOTS ${range[0]}-${range[1]} lists ${range.length - 3} replicas`,
        );
      }
    }
    if (covered !== CLUSTER_SLOTS) problems.push(`${at}: CLUSTER SLOTS covers ${covered} slots`);
  }
  return problems;
}

// A replica shows up in CLUSTER SLOTS only once the other nodes have heard (through gossip) a
// non-zero replication offset for it. On a fresh, empty master the offset stays 0 until the
// master's first replication PING (repl-ping-replica-period, 10 s). A FLUSHALL on the (empty)
// master is always propagated to its replicas, which makes their offsets non-zero right away.
async function nudgeReplicationOffsets(probes, replicasPerMaster, nudged) {
  if (replicasPerMaster === 0) return;
  await Promise.all(
    probes.map(async (p) => {
      const me = p.nodes.find((n) => n.myself);
      if (me?.role !== 'master' || nudged.has(p.port)) return;
      const online = Object.entries(p.replication).filter(
        ([k, v]) => /^slave\d+$/.test(k) && v.includes('state=online'),
      );
      if (online.length < replicasPerMaster || p.replication.master_repl_offset !== '0') return;
      nudged.add(p.port);
      await sendCommands({ port: p.port, timeoutMs: PROBE_TIMEOUT_MS }, [['FLUSHALL']]);
    }),
  );
}

function validateClusterOptions(masters, replicasPerMaster, nodeTimeout) {
  if (!Number.isInteger(masters) || masters < 3)
    throw new TypeError('startCluster: masters must be an integer >= 3');
  if (!Number.isInteger(replicasPerMaster) || replicasPerMaster < 0) {
    throw new TypeError('startCluster: replicasPerMaster must be a non-negative integer');
  }
  if (!Number.isInteger(nodeTimeout) || nodeTimeout < 100)
    throw new TypeError('startCluster: nodeTimeout must be an integer >= 100');
}

/** Launch `total` cluster-enabled nodes at once; `started` gets each one that came up, by port. */
async function startClusterNodes({ bin, base, deadline, started }, total, nodeTimeout) {
  const results = await Promise.allSettled(
    Array.from({ length: total }, () =>
      launchWithFreshPorts(
        2,
        async ([port, busPort]) => {
          const dir = path.join(base, String(port));
          await fsp.rm(path.join(dir, `nodes-${port}.conf`), { force: true });
          const argv = [
            ...commonArgs(port, dir),
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            `nodes-${port}.conf`,
            '--cluster-port',
            String(busPort),
            '--cluster-node-timeout',
            String(nodeTimeout),
          ];
          return {
            bin,
            argv,
            port,
            busPort,
            dir,
            label: `cluster node ${HOST}:${port} (bus ${busPort})`,
          };
        },
        remaining(deadline),
      ).then(({ pid, spec }) => {
        started.push({ host: HOST, port: spec.port, busPort: spec.busPort, pid, dir: spec.dir });
      }),
    ),
  );
  const failed = results.filter((r) => r.status === 'rejected');
  if (failed.length) throw failed[0].reason;
  started.sort((a, b) => a.port - b.port);
}

/** Wait until every node agrees the cluster is ready; returns the last probes of the nodes. */
async function waitForClusterReady(started, total, replicasPerMaster, deadline) {
  let probes = [];
  const nudged = new Set();
  await waitFor(
    deadline,
    `Redis Cluster on ports ${started.map((n) => n.port).join(',')}`,
    async () => {
      probes = await Promise.all(
        started.map(async (n) => ({
          port: n.port,
          ...(await probeClusterNode(n, PROBE_TIMEOUT_MS)),
        })),
      );
      await nudgeReplicationOffsets(probes, replicasPerMaster, nudged);
      const problems = clusterProblems(probes, total, replicasPerMaster);
      return problems.length === 0 ? true : problems.slice(0, 6).join('; ');
    },
    () => logTails(started.slice(0, 2)),
  );
  return probes;
}

/** The topology of the started nodes, with each one's id and role as it sees itself. */
function clusterTopology(started, probes) {
  const nodes = started.map((n) => {
    const me = probes.find((p) => p.port === n.port).nodes.find((x) => x.myself);
    return {
      host: HOST,
      port: n.port,
      pid: n.pid,
      busPort: n.busPort,
      id: me.id,
      role: me.role,
      masterId: me.masterId,
      dir: n.dir,
    };
  });
  const topology = {
    nodes,
    masters: nodes.filter((n) => n.role === 'master'),
    replicas: nodes.filter((n) => n.role === 'replica'),
    async stop() {
      await stopNodesByDir(topology.replicas);
      await stopNodesByDir(topology.masters);
    },
  };
  return topology;
}

/**
 * Start a Redis Cluster: masters * (1 + replicasPerMaster) nodes, each with its own free port and
 * its own free cluster bus port (`--cluster-port`), created with `redis-cli --cluster create`.
 */
export async function startCluster({
  baseDir,
  masters = 3,
  replicasPerMaster = 1,
  nodeTimeout = 5000,
  timeoutMs = DEFAULT_CLUSTER_TIMEOUT_MS,
} = {}) {
  const base = requireBaseDir(baseDir, 'startCluster');
  validateClusterOptions(masters, replicasPerMaster, nodeTimeout);
  const { server: bin, cli } = findRedisBinaries();
  const total = masters * (1 + replicasPerMaster);
  const deadline = Date.now() + timeoutMs;
  const started = []; // { host, port, busPort, pid, dir }

  try {
    await startClusterNodes({ bin, base, deadline, started }, total, nodeTimeout);
    await execFileText(
      cli,
      [
        '--cluster',
        'create',
        ...started.map((n) => `${HOST}:${n.port}`),
        '--cluster-replicas',
        String(replicasPerMaster),
        '--cluster-yes',
      ],
      Math.max(1000, remaining(deadline)),
    );
    const probes = await waitForClusterReady(started, total, replicasPerMaster, deadline);
    return clusterTopology(started, probes);
  } catch (error) {
    await stopNodesByDir(started).catch(() => {});
    throw error;
  }
}

// ---------------------------------------------------------------------------
