import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import session from 'express-session';
import { SessionService } from 'nestjs-redis-infra';
import { RedisSessionStore } from 'nestjs-redis-infra/express-session';
import { AppModule } from './app.module';

async function main(): Promise<void> {
  const app = await NestFactory.create(AppModule, { logger: ['error', 'warn'] });
  app.enableShutdownHooks();
  const store = new RedisSessionStore(app.get(SessionService));
  app.use(
    session({
      store,
      genid: store.genid,
      secret: 'compat-only',
      resave: false,
      saveUninitialized: false,
    }),
  );
  await app.listen(0, '127.0.0.1');
  const address = app.getHttpServer().address() as { port: number };
  // The checker reads this line to find the port.
  console.log(`listening ${address.port}`);
}

void main();
