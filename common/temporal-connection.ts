import { readFileSync } from 'node:fs';
import type { TLSConfig } from '@temporalio/client';
import { ConfigError, TEMPORAL_TLS_SETTINGS, type Config } from './config';

/** What both `Connection.connect` (@temporalio/client) and `NativeConnection.connect` (@temporalio/worker) take. */
export interface TemporalConnectionOptions {
  address: string;
  /** `false`: plaintext (never with an API key: loadConfig refuses TEMPORAL_TLS=false with one). */
  tls: TLSConfig | false;
  apiKey?: string;
}

type TemporalSettings = Pick<
  Config,
  | 'TEMPORAL_ADDRESS'
  | 'TEMPORAL_TLS'
  | 'TEMPORAL_TLS_CA_FILE'
  | 'TEMPORAL_TLS_CERT_FILE'
  | 'TEMPORAL_TLS_KEY_FILE'
  | 'TEMPORAL_TLS_SERVER_NAME'
  | 'TEMPORAL_API_KEY'
>;

/**
 * The Temporal connection of the API and the workers. TLS is on when TEMPORAL_TLS says so or, unset, when any TLS
 * setting or an API key is given (Temporal Cloud accepts API keys over TLS only). Files are read here, at start, so a
 * missing one stops the process naming its variable; a renewed certificate is read by the next start.
 */
export function temporalConnectionOptions(config: TemporalSettings): TemporalConnectionOptions {
  const on = config.TEMPORAL_TLS ?? TEMPORAL_TLS_SETTINGS.some((name) => config[name]);
  if (!on) return { address: config.TEMPORAL_ADDRESS, tls: false };
  const tls: TLSConfig = {};
  if (config.TEMPORAL_TLS_CA_FILE)
    tls.serverRootCACertificate = pem('TEMPORAL_TLS_CA_FILE', config.TEMPORAL_TLS_CA_FILE, 'CERTIFICATE');
  if (config.TEMPORAL_TLS_CERT_FILE && config.TEMPORAL_TLS_KEY_FILE)
    tls.clientCertPair = {
      crt: pem('TEMPORAL_TLS_CERT_FILE', config.TEMPORAL_TLS_CERT_FILE, 'CERTIFICATE'),
      key: pem('TEMPORAL_TLS_KEY_FILE', config.TEMPORAL_TLS_KEY_FILE, 'PRIVATE KEY'),
    };
  if (config.TEMPORAL_TLS_SERVER_NAME) tls.serverNameOverride = config.TEMPORAL_TLS_SERVER_NAME;
  return {
    address: config.TEMPORAL_ADDRESS,
    tls,
    ...(config.TEMPORAL_API_KEY ? { apiKey: config.TEMPORAL_API_KEY } : {}),
  };
}

/** Where and how the connection goes, for error messages: never the key or what the files hold. */
export function describeTemporalTarget(options: TemporalConnectionOptions): string {
  const { tls, apiKey } = options;
  const how = [
    tls && tls.serverNameOverride ? `server name ${tls.serverNameOverride}` : '',
    tls && tls.clientCertPair ? 'client certificate' : '',
    apiKey ? 'API key' : '',
  ].filter(Boolean);
  return `${options.address} ${tls ? 'over TLS' : 'without TLS'}${how.length ? ` (${how.join(', ')})` : ''}`;
}

/** A PEM file's bytes; the error names the variable and the path, never what the file holds. */
function pem(variable: string, file: string, kind: 'CERTIFICATE' | 'PRIVATE KEY'): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new ConfigError(
      `invalid configuration:\n  ${variable}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  // "-----BEGIN PRIVATE KEY", "-----BEGIN RSA PRIVATE KEY", "-----BEGIN EC PRIVATE KEY", ...
  const begin = new RegExp(`-----BEGIN (?:[A-Z0-9]+ )?${kind}-----`);
  if (!begin.test(bytes.toString('latin1')))
    throw new ConfigError(`invalid configuration:\n  ${variable}: ${file} holds no PEM ${kind.toLowerCase()}`);
  return bytes;
}
