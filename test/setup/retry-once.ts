import { jest } from '@jest/globals';

// A test that fails is run once more, with the first failure printed: the suite runs four full
// passes in CI (Node 20, 22, 24, newest ioredis) on a 2-core machine, where a timing-sensitive
// spec can miss once under load. A real regression fails both times; every first failure still
// shows in the log ("Retrying ...") so flaky specs stay visible and get fixed.
jest.retryTimes(1, { logErrorsBeforeRetry: true });
