import {
  Inject,
  Injectable,
  type BeforeApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';

import type { RedisConnection } from '../connection/redis-connection.js';
import { getRedisConnectionToken } from '../connection/tokens.js';
import type { DecoratorExplorer } from '../discovery/explorer.js';

import { coordinatorFor, existingCoordinator } from './coordination.js';
import type { LeaderMetadata } from './leader.decorator.js';
import { LEADER_METADATA } from './lock.constants.js';

/**
 * Startup and shutdown of semaphores, read-write locks and elections (which `LockService`
 * hands out): wraps the methods decorated with `@Leader`, and at shutdown stops every wait,
 * resigns every leadership and releases every permit and read-write lock of this process.
 */
@Injectable()
export class CoordinationLifecycle implements OnModuleInit, BeforeApplicationShutdown {
  constructor(
    @Inject(getRedisConnectionToken()) private readonly connection: RedisConnection,
    private readonly explorer: DecoratorExplorer,
  ) {}

  onModuleInit(): void {
    this.explorer.wrap<LeaderMetadata>(LEADER_METADATA, ({ meta, method }) => {
      const election = coordinatorFor(this.connection).sharedElection(meta.name, meta.options);
      return function leaderWrapper(this: unknown, ...args: unknown[]) {
        return election.isLeader ? method.apply(this, args) : undefined;
      };
    });
  }

  async beforeApplicationShutdown(): Promise<void> {
    await existingCoordinator(this.connection)?.shutdown();
  }
}
