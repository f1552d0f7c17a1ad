import {
  Controller,
  Get,
  type INestApplication,
  type LoggerService,
  type ModuleMetadata,
} from '@nestjs/common';
import { Test } from '@nestjs/testing';

/** A logger that keeps every line, to assert what the module logs (and never logs). */
export class CapturingLogger implements LoggerService {
  readonly lines: Array<{ level: string; context?: string; message: string }> = [];
  private add(level: string, message: unknown, rest: unknown[]): void {
    const context = rest.length ? String(rest[rest.length - 1]) : undefined;
    this.lines.push({ level, context, message: String(message) });
  }
  log(message: unknown, ...rest: unknown[]): void {
    this.add('log', message, rest);
  }
  error(message: unknown, ...rest: unknown[]): void {
    this.add('error', message, rest);
  }
  warn(message: unknown, ...rest: unknown[]): void {
    this.add('warn', message, rest);
  }
  debug(message: unknown, ...rest: unknown[]): void {
    this.add('debug', message, rest);
  }
  verbose(message: unknown, ...rest: unknown[]): void {
    this.add('verbose', message, rest);
  }
  /** Lines whose message contains `text`. */
  matching(text: string): string[] {
    return this.lines
      .filter((l) => l.message.includes(text))
      .map((l) => `${l.level}: ${l.message}`);
  }
  get text(): string {
    return this.lines.map((l) => `${l.level} [${l.context}] ${l.message}`).join('\n');
  }
}

/**
 * Compiles a testing module and starts an application with it; everything logged goes to
 * `logger` (a fresh capturing one by default), so tests stay quiet and can assert on it.
 */
export async function startApp(
  metadata: ModuleMetadata,
  logger: LoggerService = new CapturingLogger(),
): Promise<INestApplication> {
  const moduleRef = await Test.createTestingModule(metadata).setLogger(logger).compile();
  const app = moduleRef.createNestApplication({ logger });
  await app.init();
  return app;
}

/** A controller that answers 200 so an app can be driven over HTTP in tests. */
@Controller('ping')
export class PingController {
  @Get() ping(): string {
    return 'pong';
  }
}
