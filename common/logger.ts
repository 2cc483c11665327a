import pino, { type Logger } from 'pino';

/** One JSON logger shape for API and workers; child loggers add trace/workflow ids per line. */
export function createLogger(name: string, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({
    name,
    level,
    base: { service: name },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['req.headers.authorization', '*.apiKey', '*.token', '*.secret'], censor: '[redacted]' },
  });
}
export type { Logger };
