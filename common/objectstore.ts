import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { Crc32c, Crc64Nvme } from '@aws-sdk/checksums/crc';
import { Upload } from '@aws-sdk/lib-storage';
import { SignatureV4 } from '@smithy/signature-v4';
import { Agent, request } from 'undici';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  NoSuchKey,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';

/** `s3://bucket/key`: how every large object (artifacts, datasets, documents) is passed around. */
export interface ObjectRef {
  bucket: string;
  key: string;
}

export class InvalidObjectUriError extends Error {}

export function parseObjectUri(uri: string): ObjectRef {
  // A key is any text, line breaks included (S3 allows them; a knowledge source's prefix is free text).
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\/([\s\S]+)$/.exec(uri);
  if (!m) throw new InvalidObjectUriError(`'${uri}' is not an object URI of the form s3://bucket/key`);
  return { bucket: m[1]!, key: m[2]! };
}
export const objectUri = (r: ObjectRef): string => `s3://${r.bucket}/${r.key}`;

export interface ObjectHead {
  sizeBytes: number;
  etag: string | null;
  /** base64 SHA-256 as stored by S3 when the object was uploaded with a checksum. */
  sha256: string | null;
}

export interface ObjectStore {
  /** undefined when the object does not exist; throws on any other failure (so callers can retry). */
  head(ref: ObjectRef): Promise<ObjectHead | undefined>;
  put(ref: ObjectRef, body: Buffer | string, contentType?: string): Promise<void>;
  /**
   * A body of unknown length, as it arrives: in parts, a few held at a time. A body that fails (its stream errors)
   * leaves no object: the parts sent are dropped.
   */
  putStream(ref: ObjectRef, body: Readable, contentType?: string): Promise<void>;
  /**
   * Drops the unfinished multipart uploads of exactly this key (their parts), as a writer that died mid-way left them:
   * S3 keeps them, unseen and billed, until they are aborted. Returns how many there were.
   */
  abortUploads(ref: ObjectRef): Promise<number>;
  /**
   * Drops the unfinished multipart uploads under `prefix` begun before `startedBefore` (by the store's clock) whose key
   * `keys` accepts; a missing bucket has none. Returns how many there were.
   */
  abortUploadsBefore(
    bucket: string,
    prefix: string,
    startedBefore: Date,
    keys?: (key: string) => boolean,
  ): Promise<number>;
  /** `range`: bytes start to end, both included (end omitted: to the object's end). */
  getStream(ref: ObjectRef, range?: { start: number; end?: number }): Promise<Readable>;
  /** The whole object, checked against its stored checksum (or its ETag); a missing one throws as getStream does. */
  get(ref: ObjectRef): Promise<Buffer>;
  list(bucket: string, prefix: string): Promise<{ key: string; sizeBytes: number; etag: string | null }[]>;
  delete(ref: ObjectRef): Promise<void>;
  ensureBucket(bucket: string): Promise<void>;
  hasBucket(bucket: string): Promise<boolean>;
  /** Empties the bucket and removes it; a missing bucket is already removed. */
  removeBucket(bucket: string): Promise<void>;
}

export interface S3Settings {
  endpoint?: string;
  region: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  forcePathStyle: boolean;
}

export const isMissingBucket = (err: unknown): boolean =>
  err instanceof S3ServiceException && err.name === 'NoSuchBucket';

export const isNotFound = (err: unknown): boolean =>
  err instanceof S3ServiceException &&
  (err.$metadata.httpStatusCode === 404 || err.name === 'NotFound' || err.name === 'NoSuchKey');

// S3's URI encoding of a key in the path: every byte but the unreserved characters and '/'.
const encodeKey = (key: string): string =>
  encodeURIComponent(key)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replaceAll('%2F', '/');

const STREAM_PART_BYTES = 5 * 1024 * 1024;

/**
 * S3's full-object checksums, as a GET with checksum mode returns them: one is there when the object was uploaded with it
 * (AWS stores CRC64NVME by default since 2025). A composite checksum of a multipart upload (`...-N`) is not of the body.
 */
const CHECKSUMS: [header: string, of: (body: Buffer) => Promise<Uint8Array> | Uint8Array][] = [
  [
    'x-amz-checksum-crc32',
    (body) => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(crc32(body));
      return b;
    },
  ],
  ['x-amz-checksum-crc32c', (body) => digestOf(new Crc32c(), body)],
  ['x-amz-checksum-crc64nvme', (body) => digestOf(new Crc64Nvme(), body)],
  ['x-amz-checksum-sha1', (body) => createHash('sha1').update(body).digest()],
  ['x-amz-checksum-sha256', (body) => createHash('sha256').update(body).digest()],
];
const digestOf = (checksum: Crc32c | Crc64Nvme, body: Buffer) => (checksum.update(body), checksum.digest());

/**
 * Checks a GET's body against the checksum S3 returned with it, else against a single-part upload's ETag (its MD5).
 * An object encrypted with SSE-KMS or a customer key has an ETag that is not its MD5, so it gets no ETag check.
 */
export async function verifyBody(
  body: Buffer,
  headers: Record<string, string | string[] | undefined>,
  what: string,
): Promise<void> {
  const header = (name: string) => {
    const v = headers[name];
    return typeof v === 'string' && !v.includes('-') ? v : undefined;
  };
  const checksum = CHECKSUMS.find(([name]) => header(name) !== undefined);
  const sse = headers['x-amz-server-side-encryption'];
  const etagIsMd5 =
    !(typeof sse === 'string' && sse.startsWith('aws:kms')) &&
    headers['x-amz-server-side-encryption-customer-algorithm'] === undefined;
  const etag = etagIsMd5 ? header('etag')?.replaceAll('"', '') : undefined;
  let ok = true;
  if (checksum) ok = Buffer.from(await checksum[1](body)).toString('base64') === header(checksum[0]);
  else if (etag && /^[0-9a-f]{32}$/.test(etag)) ok = createHash('md5').update(body).digest('hex') === etag;
  if (!ok) throw new Error(`${what}: the body does not match the checksum the object store sent with it`);
}

/** ObjectStore over any S3 API (AWS, MinIO, versitygw, ...). */
export class S3ObjectStore implements ObjectStore {
  readonly client: S3Client;
  /**
   * Whole-object GETs (ingestion reads thousands of small documents) skip the SDK client: its middleware stack,
   * per-call signing set-up and streamed response checksum were a third of the ingestion worker's event loop. The
   * SDK's own SigV4 signer (with the client's credentials, so the same provider chain) and a keep-alive pool do it.
   */
  private readonly signer: SignatureV4;
  private readonly origin: URL;
  private readonly pathStyle: boolean;
  private readonly pool = new Agent({ keepAliveTimeout: 30_000, connections: 16 });

  constructor(s: S3Settings) {
    this.client = new S3Client({
      region: s.region,
      forcePathStyle: s.forcePathStyle,
      ...(s.endpoint ? { endpoint: s.endpoint } : {}),
      ...(s.accessKeyId && s.secretAccessKey
        ? { credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey } }
        : {}),
      // Retries belong to the Temporal activity retry policy, which is visible and bounded.
      maxAttempts: 1,
    });
    this.signer = new SignatureV4({
      credentials: this.client.config.credentials,
      region: s.region,
      service: 's3',
      sha256: this.client.config.sha256,
      uriEscapePath: false,
    });
    this.origin = new URL(s.endpoint ?? `https://s3.${s.region}.amazonaws.com`);
    this.pathStyle = s.forcePathStyle;
  }

  async get(ref: ObjectRef): Promise<Buffer> {
    // Virtual-hosted style unless asked otherwise or the bucket cannot be a TLS host label (dots), as the SDK does.
    const pathStyle = this.pathStyle || ref.bucket.includes('.');
    const host = pathStyle ? this.origin.host : `${ref.bucket}.${this.origin.host}`;
    const path = `${this.origin.pathname.replace(/\/$/, '')}${pathStyle ? `/${ref.bucket}` : ''}/${encodeKey(ref.key)}`;
    const signed = await this.signer.sign({
      method: 'GET',
      protocol: this.origin.protocol,
      hostname: pathStyle ? this.origin.hostname : `${ref.bucket}.${this.origin.hostname}`,
      ...(this.origin.port ? { port: Number(this.origin.port) } : {}),
      path,
      query: {},
      headers: {
        host,
        'x-amz-checksum-mode': 'ENABLED',
        'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
      },
    });
    const res = await request(`${this.origin.protocol}//${host}${path}`, {
      method: 'GET',
      headers: signed.headers,
      dispatcher: this.pool,
    });
    const body = Buffer.from(await res.body.arrayBuffer());
    if (res.statusCode >= 200 && res.statusCode < 300) {
      await verifyBody(body, res.headers, objectUri(ref));
      return body;
    }
    const xml = body.toString('utf8');
    const code = /<Code>([^<]*)<\/Code>/.exec(xml)?.[1] ?? (res.statusCode === 404 ? 'NoSuchKey' : 'Unknown');
    const message = /<Message>([^<]*)<\/Message>/.exec(xml)?.[1] ?? `GET ${objectUri(ref)}: HTTP ${res.statusCode}`;
    const $metadata = { httpStatusCode: res.statusCode };
    if (res.statusCode === 404 && code === 'NoSuchKey') throw new NoSuchKey({ $metadata, message });
    throw new S3ServiceException({
      name: code,
      $fault: res.statusCode >= 500 ? 'server' : 'client',
      $metadata,
      message,
    });
  }

  async head(ref: ObjectRef): Promise<ObjectHead | undefined> {
    try {
      const out = await this.client.send(
        new HeadObjectCommand({ Bucket: ref.bucket, Key: ref.key, ChecksumMode: 'ENABLED' }),
      );
      return {
        sizeBytes: out.ContentLength ?? 0,
        etag: out.ETag?.replaceAll('"', '') ?? null,
        sha256: out.ChecksumSHA256 ?? null,
      };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async put(ref: ObjectRef, body: Buffer | string, contentType?: string): Promise<void> {
    await this.client.send(
      new PutObjectCommand({
        Bucket: ref.bucket,
        Key: ref.key,
        Body: body,
        ...(contentType ? { ContentType: contentType } : {}),
      }),
    );
  }

  async putStream(ref: ObjectRef, body: Readable, contentType?: string): Promise<void> {
    await new Upload({
      client: this.client,
      params: { Bucket: ref.bucket, Key: ref.key, Body: body, ...(contentType ? { ContentType: contentType } : {}) },
      // S3's smallest part, two in flight: what an upload holds in memory is ~15 MiB whatever the body's size.
      partSize: STREAM_PART_BYTES,
      queueSize: 2,
    }).done();
  }

  async abortUploads(ref: ObjectRef): Promise<number> {
    // The prefix also lists longer keys that start with this one.
    return this.abortListed(ref.bucket, ref.key, (key) => key === ref.key);
  }

  async abortUploadsBefore(
    bucket: string,
    prefix: string,
    startedBefore: Date,
    keys: (key: string) => boolean = () => true,
  ): Promise<number> {
    try {
      return await this.abortListed(bucket, prefix, (key, initiated) => initiated < startedBefore && keys(key));
    } catch (err) {
      if (isMissingBucket(err)) return 0;
      throw err;
    }
  }

  private async abortListed(
    bucket: string,
    prefix: string,
    pick: (key: string, initiated: Date) => boolean,
  ): Promise<number> {
    let aborted = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      const out = await this.client.send(
        new ListMultipartUploadsCommand({
          Bucket: bucket,
          Prefix: prefix,
          KeyMarker: keyMarker,
          UploadIdMarker: uploadIdMarker,
        }),
      );
      for (const u of out.Uploads ?? []) {
        if (!u.Key || !u.UploadId || !pick(u.Key, u.Initiated ?? new Date(0))) continue;
        try {
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
          aborted++;
        } catch (err) {
          // Aborted meanwhile by someone else, or finished: either way it holds no parts now.
          if (!(err instanceof S3ServiceException && err.name === 'NoSuchUpload')) throw err;
        }
      }
      keyMarker = out.IsTruncated ? out.NextKeyMarker : undefined;
      uploadIdMarker = out.IsTruncated ? out.NextUploadIdMarker : undefined;
    } while (keyMarker);
    return aborted;
  }

  async getStream(ref: ObjectRef, range?: { start: number; end?: number }): Promise<Readable> {
    const out = await this.client.send(
      new GetObjectCommand({
        Bucket: ref.bucket,
        Key: ref.key,
        ...(range ? { Range: `bytes=${range.start}-${range.end ?? ''}` } : {}),
      }),
    );
    return out.Body as Readable;
  }

  async list(bucket: string, prefix: string): Promise<{ key: string; sizeBytes: number; etag: string | null }[]> {
    const items: { key: string; sizeBytes: number; etag: string | null }[] = [];
    let token: string | undefined;
    do {
      const out = await this.client.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const o of out.Contents ?? [])
        if (o.Key) items.push({ key: o.Key, sizeBytes: o.Size ?? 0, etag: o.ETag?.replaceAll('"', '') ?? null });
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
    return items;
  }

  async delete(ref: ObjectRef): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: ref.bucket, Key: ref.key }));
  }

  async ensureBucket(bucket: string): Promise<void> {
    if (!(await this.hasBucket(bucket))) await this.client.send(new CreateBucketCommand({ Bucket: bucket }));
  }

  async hasBucket(bucket: string): Promise<boolean> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: bucket }));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async removeBucket(bucket: string): Promise<void> {
    try {
      for (const o of await this.list(bucket, '')) await this.delete({ bucket, key: o.key });
      await this.client.send(new DeleteBucketCommand({ Bucket: bucket }));
    } catch (err) {
      if (!(isNotFound(err) || isMissingBucket(err))) throw err;
    }
  }
}

/** Streams an object through SHA-256, reporting progress so a long hash can heartbeat. */
export async function sha256OfObject(
  store: ObjectStore,
  ref: ObjectRef,
  onProgress?: (bytes: number) => void,
): Promise<string> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of await store.getStream(ref)) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
    onProgress?.(bytes);
  }
  return hash.digest('hex');
}

/**
 * An object's SHA-256 (hex): the checksum the store kept from the upload when it has one (S3 additional checksums,
 * base64 in the head), else computed by streaming the object.
 */
export async function sha256Of(
  store: ObjectStore,
  ref: ObjectRef,
  head: ObjectHead,
  onProgress?: (bytes: number) => void,
): Promise<string> {
  return head.sha256 ? Buffer.from(head.sha256, 'base64').toString('hex') : sha256OfObject(store, ref, onProgress);
}

/** The S3 settings of the platform's own configuration (API and workers share one object store). */
export const s3StoreFromConfig = (c: {
  S3_ENDPOINT?: string;
  S3_REGION: string;
  S3_ACCESS_KEY_ID?: string;
  S3_SECRET_ACCESS_KEY?: string;
  S3_FORCE_PATH_STYLE: boolean;
}): S3ObjectStore =>
  new S3ObjectStore({
    endpoint: c.S3_ENDPOINT,
    region: c.S3_REGION,
    accessKeyId: c.S3_ACCESS_KEY_ID,
    secretAccessKey: c.S3_SECRET_ACCESS_KEY,
    forcePathStyle: c.S3_FORCE_PATH_STYLE,
  });
