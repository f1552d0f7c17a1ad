/**
 * What the snippets of README.md and docs/*.md take from the reader's own application, declared
 * once for scripts/check-doc-snippets.mjs. Only the application's side belongs here: anything a
 * reader must import or declare to use a library (a `Request` type, the `SessionData`
 * augmentation of express-session) stays in the snippet, so that the check fails when a snippet
 * leaves it out.
 */
import type { Request, Response } from 'express';
import type { Redis } from 'ioredis';

import type { Lock, Session, SessionService } from 'nestjs-redis-infra';

declare global {
  /** The application's root module. */
  class AppModule {}

  interface User {
    id: string;
    role: string;
  }
  interface Credentials {
    email: string;
    password: string;
  }
  class UsersService {
    verify(credentials: Credentials): Promise<User>;
  }

  interface Product {
    id: string;
    name: string;
  }
  interface ProductPatch {
    name?: string;
  }
  class ProductRepository {
    findProduct(id: string, options?: { signal?: AbortSignal }): Promise<Product>;
    update(id: string, patch: ProductPatch): Promise<Product>;
  }

  class InvoiceStorage {
    render(id: string, options: { signal: AbortSignal }): Promise<Buffer>;
    put(path: string, body: Buffer, options: { fencingToken: number }): Promise<void>;
  }

  interface Cart {
    items: string[];
  }

  // The one-line examples of the SessionService reference run inside a request handler of a
  // service that injected `sessions`; these are the names they use from that context.
  const sessions: SessionService;
  const req: Request;
  const res: Response;
  const current: Session;
  const user: User;
  const id: string;
  const sku: string;
  // The fencing example: the storage's own client, a held lock, and the document to write.
  const redis: Redis;
  const lock: Lock;
  const body: string;
}
