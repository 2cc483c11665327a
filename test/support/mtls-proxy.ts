import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** PEM file paths of a test PKI made with openssl (as deploy/dev/kube/cluster.sh makes the control plane's). */
export interface TestPki {
  ca: string;
  server: { crt: string; key: string };
  clients: Record<string, { crt: string; key: string }>;
  /** A CA that signed nothing here: trusting only it must fail. */
  otherCa: string;
}

const openssl = (cwd: string, ...args: string[]) => run('openssl', args, { cwd });

async function makeCa(dir: string, name: string): Promise<string> {
  await openssl(
    dir,
    ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
    ...['-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${name}`],
    ...['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
  );
  return path.join(dir, `${name}.pem`);
}

/** A leaf signed by `ca`: the server's with its DNS name, a client's with its common name. */
async function makeLeaf(dir: string, name: string, usage: 'serverAuth' | 'clientAuth', dnsName?: string) {
  await openssl(
    dir,
    ...['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
    ...['-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${dnsName ?? name}`],
  );
  const ext = [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    `extendedKeyUsage=${usage}`,
    ...(dnsName ? [`subjectAltName=DNS:${dnsName}`] : []),
  ];
  await writeFile(path.join(dir, `${name}.ext`), ext.join('\n') + '\n');
  await openssl(
    dir,
    ...['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial'],
    ...['-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`],
  );
  return { crt: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
}

export async function makeTestPki(dir: string, serverName: string, clientNames: string[]): Promise<TestPki> {
  await mkdir(dir, { recursive: true });
  const ca = await makeCa(dir, 'ca');
  const otherCa = await makeCa(dir, 'other-ca');
  const server = await makeLeaf(dir, 'server', 'serverAuth', serverName);
  const clients: TestPki['clients'] = {};
  for (const name of clientNames) clients[name] = await makeLeaf(dir, name, 'clientAuth');
  return { ca, otherCa, server, clients };
}

/** A TLS front of a plaintext gRPC server that, like a secured Temporal cluster, admits only clients with a certificate. */
export interface MtlsProxy {
  address: string;
  /** The common names of the client certificates of the connections it let through, in order. */
  admitted: string[];
  /** The handshake errors of the connections it refused (OpenSSL's words). */
  refused: string[];
  close(): Promise<void>;
}

export async function startMtlsProxy(pki: TestPki, upstream: string): Promise<MtlsProxy> {
  const [host, port] = [
    upstream.slice(0, upstream.lastIndexOf(':')),
    Number(upstream.slice(upstream.lastIndexOf(':') + 1)),
  ];
  const admitted: string[] = [];
  const refused: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = tls.createServer(
    {
      cert: await readFile(pki.server.crt),
      key: await readFile(pki.server.key),
      ca: await readFile(pki.ca),
      requestCert: true,
      rejectUnauthorized: true,
      // gRPC clients (tonic in the worker's core) insist on HTTP/2 being negotiated.
      ALPNProtocols: ['h2'],
    },
    (client) => {
      admitted.push(String(client.getPeerCertificate().subject.CN));
      const backend = net.connect(port, host);
      for (const s of [client, backend]) {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(backend).pipe(client);
      client.on('close', () => backend.destroy());
      backend.on('close', () => client.destroy());
    },
  );
  server.on('tlsClientError', (err) => refused.push(err.message));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    admitted,
    refused,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
