import type { StorageAdmin } from '.';
import { VersitygwAdmin } from './versitygw';

/** The configured identity management of the object store (LLMHUB_STORAGE_ADMIN); none: tenants get no S3 users. */
export function storageAdminFromConfig(c: {
  LLMHUB_STORAGE_ADMIN: 'versitygw' | 'none';
  S3_ENDPOINT?: string;
  S3_REGION: string;
  S3_ACCESS_KEY_ID?: string;
  S3_SECRET_ACCESS_KEY?: string;
}): StorageAdmin | undefined {
  if (c.LLMHUB_STORAGE_ADMIN === 'none') return undefined;
  if (!c.S3_ENDPOINT || !c.S3_ACCESS_KEY_ID || !c.S3_SECRET_ACCESS_KEY)
    throw new Error('LLMHUB_STORAGE_ADMIN=versitygw needs S3_ENDPOINT, S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY');
  return new VersitygwAdmin({
    endpoint: c.S3_ENDPOINT,
    region: c.S3_REGION,
    accessKeyId: c.S3_ACCESS_KEY_ID,
    secretAccessKey: c.S3_SECRET_ACCESS_KEY,
  });
}
