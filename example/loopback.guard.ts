import { Injectable, type CanActivate, type ExecutionContext } from '@nestjs/common';

/**
 * The example's stand-in for an admin guard: the Redis page answers only requests from this
 * machine. A real application puts its own authentication guard here.
 */
@Injectable()
export class LoopbackOnlyGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<{ socket?: { remoteAddress?: string } }>();
    const from = req.socket?.remoteAddress ?? '';
    return from === '127.0.0.1' || from === '::1' || from === '::ffff:127.0.0.1';
  }
}
