// Start and stop real redis-server processes (standalone, cluster, sentinel) on free
// loopback ports for tests, jest globalSetup/globalTeardown and the demo script.
//
// Dependency-free: Node built-ins only. Works on Linux and macOS.
//
// This file re-exports the pieces: resp.mjs (RESP client), process.mjs (binaries, ports,
// pids), launch.mjs (starting one server), standalone.mjs, cluster.mjs and sentinel.mjs.
//
// Every server is daemonized (`--daemonize yes`), so the calling process holds no
// child-process handle once a start function returns. A server lives in its own
// directory `<baseDir>/<port>/` holding `redis.pid`, `redis.log` and (cluster) `nodes-<port>.conf`
// or (sentinel) `sentinel.conf`. Stopping is always done through those pidfiles, after
// checking that the pid still belongs to a redis-server running in that directory.

export {
  findRedisBinaries,
  freePorts,
  freePort,
  isAlive,
  isRedisProcess,
  stopPid,
  runningServers,
  stopAll,
} from './process.mjs';
export { RespError, sendCommand } from './resp.mjs';
export {
  startStandalone,
  makeTlsCertificates,
  startTlsStandalone,
  setAclUser,
  aclLog,
} from './standalone.mjs';
export { startCluster } from './cluster.mjs';
export { startSentinel } from './sentinel.mjs';
