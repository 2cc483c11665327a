import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { derivedTenantCredentials, type S3Credentials, type StorageAdmin } from '.';

/** The hash SigV4 needs, from node:crypto (SHA-256, or HMAC-SHA-256 with a key). */
class Sha256 {
  private h: Hash | Hmac;
  constructor(private readonly key?: string | ArrayBuffer | ArrayBufferView) {
    this.h = this.fresh();
  }
  private fresh(): Hash | Hmac {
    if (this.key === undefined) return createHash('sha256');
    const key =
      typeof this.key === 'string'
        ? this.key
        : ArrayBuffer.isView(this.key)
          ? Buffer.from(this.key.buffer, this.key.byteOffset, this.key.byteLength)
          : Buffer.from(this.key);
    return createHmac('sha256', key);
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.h.update(
      typeof data === 'string'
        ? data
        : ArrayBuffer.isView(data)
          ? Buffer.from(data.buffer, data.byteOffset, data.byteLength)
          : Buffer.from(data),
    );
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.h.digest()));
  }
  reset(): void {
    this.h = this.fresh();
  }
}

class VersitygwAdminError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const xmlEscape = (s: string): string => s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * versitygw's admin API (PATCH routes on the S3 port, SigV4-signed by an admin; the gateway runs with `--iam-dir`)
 * and its S3 API with the root credential (bucket policies).
 */
export class VersitygwAdmin implements StorageAdmin {
  private readonly signer: SignatureV4;

  constructor(private readonly s: { endpoint: string; region: string; accessKeyId: string; secretAccessKey: string }) {
    this.signer = new SignatureV4({
      service: 's3',
      region: s.region,
      credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
      sha256: Sha256,
    });
  }

  credentialsOf(tenantId: string): S3Credentials {
    return derivedTenantCredentials(this.s.secretAccessKey, tenantId);
  }

  async provisionTenant(tenantId: string, bucket: string): Promise<void> {
    const { accessKeyId, secretAccessKey } = this.credentialsOf(tenantId);
    try {
      await this.call(
        'PATCH',
        '/create-user',
        {},
        `<Account><Access>${xmlEscape(accessKeyId)}</Access><Secret>${xmlEscape(secretAccessKey)}</Secret><Role>user</Role><UserID>0</UserID><GroupID>0</GroupID><ProjectID>0</ProjectID></Account>`,
      );
    } catch (err) {
      if (!(err instanceof VersitygwAdminError && err.code === 'XAdminUserExists')) throw err;
      // Made by an earlier, interrupted call, or before the seed changed: the derived secret is the one that holds.
      await this.call(
        'PATCH',
        '/update-user',
        { access: accessKeyId },
        `<MutableProps><Secret>${xmlEscape(secretAccessKey)}</Secret></MutableProps>`,
      );
    }
    if ((await this.call('HEAD', `/${bucket}`, {}, '', true)) === 404)
      await this.call('PATCH', `/${bucket}/create`, {}, '', false, { 'x-vgw-owner': accessKeyId });
    else await this.call('PATCH', '/change-bucket-owner/', { bucket, owner: accessKeyId });
  }

  async removeTenant(tenantId: string): Promise<void> {
    // Deleting a user that is not there succeeds.
    await this.call('PATCH', '/delete-user', { access: this.credentialsOf(tenantId).accessKeyId });
  }

  async setReaders(bucket: string, tenantIds: string[]): Promise<void> {
    if (tenantIds.length === 0) {
      await this.call('DELETE', `/${bucket}`, { policy: '' });
      return;
    }
    const policy = {
      Version: '2012-10-17',
      Statement: [
        {
          Effect: 'Allow',
          Principal: { AWS: tenantIds.map((t) => this.credentialsOf(t).accessKeyId) },
          Action: ['s3:GetObject', 's3:ListBucket'],
          Resource: [`arn:aws:s3:::${bucket}`, `arn:aws:s3:::${bucket}/*`],
        },
      ],
    };
    await this.call('PUT', `/${bucket}`, { policy: '' }, JSON.stringify(policy));
  }

  /** One signed request; answers the status, throwing on an error status unless `statusOnly`. */
  private async call(
    method: string,
    path: string,
    query: Record<string, string>,
    body = '',
    statusOnly = false,
    headers: Record<string, string> = {},
  ): Promise<number> {
    const url = new URL(path, this.s.endpoint);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    const signed = await this.signer.sign({
      method,
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port ? { port: Number(url.port) } : {}),
      path: url.pathname,
      query,
      headers: {
        host: url.host,
        'x-amz-content-sha256': createHash('sha256').update(body).digest('hex'),
        ...headers,
      },
      body,
    });
    const res = await fetch(url, {
      method,
      headers: signed.headers,
      ...(body ? { body } : {}),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    if (statusOnly || res.ok) return res.status;
    const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? String(res.status);
    const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] ?? text.slice(0, 200);
    throw new VersitygwAdminError(code, `versitygw ${method} ${url.pathname}: ${code}: ${message}`);
  }
}
