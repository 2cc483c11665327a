import { describe, expect, it } from '@jest/globals';
import { outOfScope, tenantBucketOf } from '../../common/store/storage-scope';

const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

describe('tenant bucket names', () => {
  it('are the prefix and the id when that is a valid bucket name', () => {
    expect(tenantBucketOf('llmhub-t-', 'acme')).toBe('llmhub-t-acme');
  });

  it('hash ids too long, ending in a dash or in a reserved suffix, deterministically and without collisions', () => {
    const long = 'a'.repeat(63);
    const names = [long, `${long.slice(0, 62)}b`, 'acme-', 'x-s3alias'].map((id) => tenantBucketOf('llmhub-t-', id));
    for (const name of names) {
      expect(name).toMatch(BUCKET_NAME);
      expect(name.length).toBeLessThanOrEqual(63);
      expect(name.startsWith('llmhub-t-')).toBe(true);
    }
    expect(new Set(names).size).toBe(names.length);
    expect(tenantBucketOf('llmhub-t-', long)).toBe(names[0]);
  });
});

describe('storage scope', () => {
  const scope = { bucket: 'llmhub-t-acme', grants: ['shared'] };

  it('lets a tenant read its bucket and its grants, and write only its own bucket', () => {
    expect(outOfScope(scope, 's3://llmhub-t-acme/a/b')).toBeUndefined();
    expect(outOfScope(scope, 's3://shared/corpus/x')).toBeUndefined();
    expect(outOfScope(scope, 's3://llmhub-t-acme/out/', 'write')).toBeUndefined();
    expect(outOfScope(scope, 's3://shared/out/', 'write')).toContain('outside');
  });

  it('refuses other buckets, look-alike names and what is no object URI', () => {
    for (const uri of ['s3://llmhub-t-rival/x', 's3://llmhub-t-acme2/x', 's3://llmhub/tenants/acme/x'])
      expect(outOfScope(scope, uri)).toContain("outside the tenant's storage scope");
    expect(outOfScope(scope, 'https://llmhub-t-acme/x')).toContain('not an object URI');
  });
});
