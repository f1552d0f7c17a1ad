import {
  BadRequestException,
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  NotFoundException,
  Param,
  Post,
  Req,
  Res,
  UnauthorizedException,
} from '@nestjs/common';
import type { Request, Response } from 'express';

import { SessionService, type Session, type SessionSummary } from '../src/index.js';

/** Name of the cookie that carries the session id. */
const COOKIE = 'sid';
/** Longest user id the example accepts. */
const MAX_USER_ID_LENGTH = 128;

/** What `GET /session/me` answers: the session, without its id. */
export interface MeResponse {
  userId: string;
  handle: string;
  data: Record<string, unknown>;
  createdAt: number;
  lastSeenAt: number;
  expiresAt: number;
  absoluteExpiresAt: number;
}

/**
 * Sign-in with server-side sessions through `SessionService`. The session id travels in an
 * HttpOnly cookie (browsers) or in `Authorization: Bearer <id>` (API clients); Redis keeps
 * only its digest.
 *
 * This is a demo: `POST /session/login` trusts the user id it is given. A real application
 * checks a password (or an OAuth callback) first.
 */
@Controller('session')
export class SessionController {
  constructor(private readonly sessions: SessionService) {}

  /** `POST /session/login` with `{ "userId": "alice" }`: starts a session, sets the cookie. */
  @Post('login')
  @HttpCode(200)
  async login(
    @Body() body: unknown,
    @Req() req: Request,
    @Res({ passthrough: true }) res: Response,
  ): Promise<{ id: string; userId: string; expiresAt: number }> {
    const userId = parseUserId(body);
    const session = await this.sessions.create(
      userId,
      { signedInWith: 'demo' },
      { meta: { userAgent: req.headers['user-agent'] ?? 'unknown', ip: req.ip ?? 'unknown' } },
    );
    res.cookie(COOKIE, session.id, {
      httpOnly: true,
      sameSite: 'lax',
      secure: req.secure,
      path: '/',
      maxAge: session.absoluteExpiresAt - session.createdAt,
    });
    return { id: session.id, userId, expiresAt: session.expiresAt };
  }

  /** `GET /session/me`: the signed-in session (its idle expiry slides), or 401. */
  @Get('me')
  async me(@Req() req: Request): Promise<MeResponse> {
    const s = await this.current(req);
    return {
      userId: s.userId,
      handle: s.handle,
      data: s.data,
      createdAt: s.createdAt,
      lastSeenAt: s.lastSeenAt,
      expiresAt: s.expiresAt,
      absoluteExpiresAt: s.absoluteExpiresAt,
    };
  }

  /** `GET /session/devices`: every session of the signed-in user; `current` marks this one. */
  @Get('devices')
  async devices(@Req() req: Request): Promise<Array<SessionSummary & { current: boolean }>> {
    const session = await this.current(req);
    const all = await this.sessions.listByUser(session.userId);
    return all.map((s) => ({ ...s, current: s.handle === session.handle }));
  }

  /** `DELETE /session/devices/:handle`: signs one of the user's devices out. */
  @Delete('devices/:handle')
  @HttpCode(204)
  async revoke(@Req() req: Request, @Param('handle') handle: string): Promise<void> {
    const session = await this.current(req);
    // userId: a handle of someone else's session must not work here.
    if (!(await this.sessions.destroy(handle, { userId: session.userId }))) {
      throw new NotFoundException('No such session among yours.');
    }
  }

  /** `POST /session/logout`: ends this session. */
  @Post('logout')
  @HttpCode(204)
  async logout(@Req() req: Request, @Res({ passthrough: true }) res: Response): Promise<void> {
    const session = await this.current(req);
    await this.sessions.destroy(session.id);
    res.clearCookie(COOKIE, { path: '/' });
  }

  /** `POST /session/logout-everywhere`: ends every session of the user, this one included. */
  @Post('logout-everywhere')
  @HttpCode(200)
  async logoutEverywhere(
    @Req() req: Request,
    @Res({ passthrough: true }) res: Response,
  ): Promise<{ ended: number }> {
    const session = await this.current(req);
    const ended = await this.sessions.destroyAllForUser(session.userId);
    res.clearCookie(COOKIE, { path: '/' });
    return { ended };
  }

  /** The session the request carries, touched (sliding expiry); 401 without one. */
  private async current(req: Request): Promise<Session> {
    const id = sessionIdOf(req);
    const session = id === undefined ? null : await this.sessions.touch(id);
    if (!session) {
      throw new UnauthorizedException(
        'Not signed in: POST /session/login first, then send the cookie or "Authorization: Bearer <id>".',
      );
    }
    return session;
  }
}

/** The id from `Authorization: Bearer <id>`, else from the `sid` cookie. */
function sessionIdOf(req: Request): string | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return auth.slice('Bearer '.length).trim();
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [name, ...value] = part.trim().split('=');
    if (name === COOKIE) return decodeURIComponent(value.join('='));
  }
  return undefined;
}

function parseUserId(body: unknown): string {
  const userId = (body as { userId?: unknown } | null)?.userId;
  if (typeof userId !== 'string' || userId.trim() === '' || userId.length > MAX_USER_ID_LENGTH) {
    throw new BadRequestException(
      `Send a JSON body like {"userId":"alice"}: userId must be a non-empty string of at most ${MAX_USER_ID_LENGTH} characters.`,
    );
  }
  return userId;
}
