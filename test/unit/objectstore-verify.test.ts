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
  it('accepts a body matching its CRC32, SHA-256 or single-part ETag, and refuses one that does not', async () => {
    await expect(verifyBody(body, { 'x-amz-checksum-crc32': crc() }, 's3://b/k')).resolves.toBeUndefined();
    await expect(
      verifyBody(body, { 'x-amz-checksum-sha256': createHash('sha256').update(body).digest('base64') }, 's3://b/k'),
    ).resolves.toBeUndefined();
    await expect(verifyBody(body, { etag: `"${md5}"` }, 's3://b/k')).resolves.toBeUndefined();
    await expect(verifyBody(Buffer.from('tampered\n'), { 'x-amz-checksum-crc32': crc() }, 's3://b/k')).rejects.toThrow(
      /s3:\/\/b\/k: the body does not match/,
    );
    await expect(verifyBody(Buffer.from('tampered\n'), { etag: `"${md5}"` }, 's3://b/k')).rejects.toThrow(
      /does not match/,
    );
  });

  it('checks the CRC32C, CRC64NVME and SHA-1 that S3 stores (CRC64NVME by default on AWS), ahead of the ETag', async () => {
    // The algorithms' standard check values, over "123456789" (CRC catalogue: CRC-32C, CRC-64/NVME).
    const check = Buffer.from('123456789');
    const b64 = (hex: string) => Buffer.from(hex, 'hex').toString('base64');
    const stored = {
      'x-amz-checksum-crc32c': b64('e3069283'),
      'x-amz-checksum-crc64nvme': b64('ae8b14860a799888'),
      'x-amz-checksum-sha1': createHash('sha1').update(check).digest('base64'),
    };
    for (const [name, value] of Object.entries(stored)) {
      await expect(verifyBody(check, { [name]: value }, 's3://b/k')).resolves.toBeUndefined();
      // An ETag that is not the body's MD5 is not looked at when a checksum is there.
      await expect(verifyBody(check, { [name]: value, etag: `"${md5}"` }, 's3://b/k')).resolves.toBeUndefined();
      await expect(verifyBody(Buffer.from('123456780'), { [name]: value }, 's3://b/k')).rejects.toThrow(
        /does not match/,
      );
    }
    // A multipart upload's composite checksum is of its parts' checksums, not of the body: the ETag's turn (none here).
    await expect(
      verifyBody(
        Buffer.from('123456780'),
        { 'x-amz-checksum-crc64nvme': `${stored['x-amz-checksum-crc64nvme']}-3` },
        's3://b/k',
      ),
    ).resolves.toBeUndefined();
  });

  it('does not take the ETag of an SSE-KMS or SSE-C object for an MD5 (it is not one)', async () => {
    const notMd5 = `"${'0'.repeat(32)}"`;
    await expect(
      verifyBody(body, { etag: notMd5, 'x-amz-server-side-encryption': 'aws:kms' }, 's3://b/k'),
    ).resolves.toBeUndefined();
    await expect(
      verifyBody(body, { etag: notMd5, 'x-amz-server-side-encryption-customer-algorithm': 'AES256' }, 's3://b/k'),
    ).resolves.toBeUndefined();
    // SSE-S3's ETag is the MD5: still checked.
    await expect(
      verifyBody(body, { etag: notMd5, 'x-amz-server-side-encryption': 'AES256' }, 's3://b/k'),
    ).rejects.toThrow(/does not match/);
  });
});
