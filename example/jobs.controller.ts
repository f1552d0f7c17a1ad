import { ConflictException, Controller, Param, Post } from '@nestjs/common';

import { LockService } from '../src/index.js';

/**
 * `LockService`: a job that must not run twice at once across instances. The fencing token is
 * what the job would pass to the storage it writes, so a stale run can be refused there.
 */
@Controller()
export class JobsController {
  constructor(private readonly locks: LockService) {}

  /** `POST /jobs/:name/run`: 409 while another run (in any instance) holds the lock. */
  @Post('jobs/:name/run')
  async run(@Param('name') name: string) {
    const lock = await this.locks.tryAcquire(`job:${name}`, { ttl: 10_000 });
    if (!lock) throw new ConflictException(`job "${name}" is already running`);
    try {
      await new Promise((resolve) => setTimeout(resolve, 300)); // the work
      return { job: name, fencingToken: lock.fencingToken, lost: lock.signal.aborted };
    } finally {
      await lock.release();
    }
  }
}
