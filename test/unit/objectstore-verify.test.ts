import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from '@jest/globals';
import { verifyBody } from '../../common/objectstore';

const body = Buffer.from('a document\n');
const md5 = createHash('md5').update(body).digest('hex');
const crc = () => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc32(body));
  return b.toString('base64');
};

describe('verifyBody, the integrity check of the lean GET', () => {
  it('accepts a body matching its CRC32, SHA-256 or single-part ETag, and refuses one that does not', () => {
    expect(() => verifyBody(body, { 'x-amz-checksum-crc32': crc() }, 's3://b/k')).not.toThrow();
    expect(() =>
      verifyBody(body, { 'x-amz-checksum-sha256': createHash('sha256').update(body).digest('base64') }, 's3://b/k'),
    ).not.toThrow();
    expect(() => verifyBody(body, { etag: `"${md5}"` }, 's3://b/k')).not.toThrow();
    expect(() => verifyBody(Buffer.from('tampered\n'), { 'x-amz-checksum-crc32': crc() }, 's3://b/k')).toThrow(
      /s3:\/\/b\/k: the body does not match/,
    );
    expect(() => verifyBody(Buffer.from('tampered\n'), { etag: `"${md5}"` }, 's3://b/k')).toThrow(/does not match/);
  });

  it('does not take the ETag of an SSE-KMS or SSE-C object for an MD5 (it is not one)', () => {
    const notMd5 = `"${'0'.repeat(32)}"`;
    expect(() =>
      verifyBody(body, { etag: notMd5, 'x-amz-server-side-encryption': 'aws:kms' }, 's3://b/k'),
    ).not.toThrow();
    expect(() =>
      verifyBody(body, { etag: notMd5, 'x-amz-server-side-encryption-customer-algorithm': 'AES256' }, 's3://b/k'),
    ).not.toThrow();
    // SSE-S3's ETag is the MD5: still checked.
    expect(() => verifyBody(body, { etag: notMd5, 'x-amz-server-side-encryption': 'AES256' }, 's3://b/k')).toThrow(
      /does not match/,
    );
  });
});
