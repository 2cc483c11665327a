import pino, { type DestinationStream, type Logger } from 'pino';

/**
 * One JSON logger shape for API and workers; child loggers add trace/workflow ids per line. `destination`: stdout
 * unless given (a test that reads what was logged).
 */
export function createLogger(
  name: string,
  level = process.env.LOG_LEVEL ?? 'info',
  destination?: DestinationStream,
): Logger {
  const options = {
    name,
    level,
    base: { service: name },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['req.headers.authorization', '*.apiKey', '*.token', '*.secret'], censor: '[redacted]' },
  };
  return destination ? pino(options, destination) : pino(options);
}
export type { Logger };
