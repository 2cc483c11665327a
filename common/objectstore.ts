import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
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
  /** `range`: bytes start to end, both included (end omitted: to the object's end). */
  getStream(ref: ObjectRef, range?: { start: number; end?: number }): Promise<Readable>;
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

export const isNotFound = (err: unknown): boolean =>
  err instanceof S3ServiceException &&
  (err.$metadata.httpStatusCode === 404 || err.name === 'NotFound' || err.name === 'NoSuchKey');

/** ObjectStore over any S3 API (AWS, MinIO, versitygw, ...). */
export class S3ObjectStore implements ObjectStore {
  readonly client: S3Client;

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
      if (!(isNotFound(err) || (err instanceof S3ServiceException && err.name === 'NoSuchBucket'))) throw err;
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
