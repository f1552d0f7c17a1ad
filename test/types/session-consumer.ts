/**
 * Compiled (never run) by `npm test` against the emitted `dist/*.d.ts`: SessionService from the
 * package root, and the express-session store from its own entry, `nestjs-redis-infra/express-session`.
 */
import { Controller, Get, Module, Req } from '@nestjs/common';
import type { Request } from 'express';
import session from 'express-session';

import { RedisModule, SessionService, type Session, type SessionSummary } from 'nestjs-redis-infra';
import {
  RedisSessionStore,
  type RedisSessionStoreOptions,
} from 'nestjs-redis-infra/express-session';

interface Cart {
  items: string[];
  coupon?: string;
}

@Controller('me')
export class MeController {
  constructor(private readonly sessions: SessionService) {}

  @Get()
  async me(@Req() req: Request): Promise<Session<Cart> | null> {
    const created: Session<Cart> = await this.sessions.create('u1', { items: [] }, { ttl: 1000 });
    await this.sessions.update<Cart>(created.id, { coupon: 'X' });
    await this.sessions.update<Cart>(created.id, (cart) => ({
      ...cart,
      items: [...cart.items, 'sku'],
    }));
    const devices: SessionSummary[] = await this.sessions.listByUser('u1');
    await this.sessions.destroy(devices[0].handle, { userId: 'u1' });
    const ended: number = await this.sessions.destroyAllForUser('u1', { except: created.id });
    void ended;
    const rotated = await this.sessions.rotate<Cart>(created.id);
    void req;
    return rotated ? this.sessions.touch<Cart>(rotated.id) : null;
  }
}

@Module({
  imports: [RedisModule.forRoot({ session: { maxBytes: 4096, maxSessionsPerUser: 5 } })],
  controllers: [MeController],
})
export class SessionAppModule {}

export function middleware(sessions: SessionService) {
  const options: RedisSessionStoreOptions = { absoluteTtl: 86_400_000 };
  const store = new RedisSessionStore(sessions, options);
  const login = (req: Request): Promise<void> => store.login(req, 'u1');
  void login;
  return session({
    store,
    genid: store.genid,
    secret: 's',
    resave: false,
    saveUninitialized: false,
  });
}
