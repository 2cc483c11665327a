import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';

/**
 * Where key-encryption keys live: a key file (KeyFileKeks) or a KMS. Only wrapped data keys cross this interface, so
 * a KMS adapter (AWS KMS Encrypt/Decrypt, Vault transit) implements the same two calls without the platform ever
 * holding its keys.
 */
export interface KeyEncryptionKeys {
  /** Wraps a data key under the current primary key; `kek` names the key that did, for unwrap. */
  wrap(dataKey: Buffer): Promise<{ kek: string; wrapped: string }>;
  unwrap(kek: string, wrapped: string): Promise<Buffer>;
  /** The id wrap uses now; a credential wrapped under another is due for rewrap. */
  primary(): Promise<string>;
}

/** A credential at rest: its own data key (wrapped by a KEK) and the credential sealed with that data key. */
export interface SealedCredential {
  v: 1;
  kek: string;
  wrappedKey: string;
  iv: string;
  tag: string;
  ciphertext: string;
}

const b64 = (b: Buffer) => b.toString('base64');
const unb64 = (s: string) => Buffer.from(s, 'base64');

function gcmSeal(key: Buffer, plain: Buffer, aad: Buffer): { iv: Buffer; tag: Buffer; ciphertext: Buffer } {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv).setAAD(aad);
  const ciphertext = Buffer.concat([c.update(plain), c.final()]);
  return { iv, tag: c.getAuthTag(), ciphertext };
}

function gcmOpen(key: Buffer, iv: Buffer, tag: Buffer, ciphertext: Buffer, aad: Buffer): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, iv).setAAD(aad).setAuthTag(tag);
  return Buffer.concat([d.update(ciphertext), d.final()]);
}

/** The error every failed open gives: it never names the credential, the key or the data. */
export class CredentialUnavailableError extends Error {}

/**
 * Envelope encryption of tenant credentials. `context` (e.g. the provider's owner and id) is bound in as associated
 * data, so a sealed credential copied onto another row does not open there.
 */
export class CredentialVault {
  constructor(private readonly keks: KeyEncryptionKeys) {}

  async seal(plain: string, context: string): Promise<SealedCredential> {
    const dataKey = randomBytes(32);
    try {
      const sealed = gcmSeal(dataKey, Buffer.from(plain, 'utf8'), Buffer.from(context, 'utf8'));
      const { kek, wrapped } = await this.keks.wrap(dataKey);
      return {
        v: 1,
        kek,
        wrappedKey: wrapped,
        iv: b64(sealed.iv),
        tag: b64(sealed.tag),
        ciphertext: b64(sealed.ciphertext),
      };
    } finally {
      dataKey.fill(0);
    }
  }

  async open(s: SealedCredential, context: string): Promise<string> {
    let dataKey: Buffer | undefined;
    try {
      dataKey = await this.keks.unwrap(s.kek, s.wrappedKey);
      return gcmOpen(dataKey, unb64(s.iv), unb64(s.tag), unb64(s.ciphertext), Buffer.from(context, 'utf8')).toString(
        'utf8',
      );
    } catch (err) {
      if (err instanceof CredentialUnavailableError) throw err;
      throw new CredentialUnavailableError(`a stored credential does not open (key '${s.kek}')`);
    } finally {
      dataKey?.fill(0);
    }
  }

  /**
   * The same data key wrapped under the primary KEK; the credential's ciphertext is untouched. Undefined when it
   * already is. Rotation: add a new key to the key file as primary, rewrap, then drop the old key.
   */
  async rewrap(s: SealedCredential): Promise<SealedCredential | undefined> {
    if (s.kek === (await this.keks.primary())) return undefined;
    const dataKey = await this.keks.unwrap(s.kek, s.wrappedKey).catch((err: unknown) => {
      throw err instanceof CredentialUnavailableError
        ? err
        : new CredentialUnavailableError(`a stored data key does not unwrap (key '${s.kek}')`);
    });
    try {
      const { kek, wrapped } = await this.keks.wrap(dataKey);
      return { ...s, kek, wrappedKey: wrapped };
    } finally {
      dataKey.fill(0);
    }
  }

  /**
   * Rewraps the sealed credential of each stored row; `save` writes one back (unless the row changed meanwhile) and
   * says whether it did. `stranded`: those under a key the key file no longer holds, which open nowhere.
   */
  async rewrapEach<T>(
    rows: T[],
    sealedOf: (row: T) => SealedCredential,
    save: (row: T, next: SealedCredential) => Promise<boolean>,
  ): Promise<{ rewrapped: number; stranded: number }> {
    let rewrapped = 0;
    let stranded = 0;
    for (const row of rows) {
      let next: SealedCredential | undefined;
      try {
        next = await this.rewrap(sealedOf(row));
      } catch (err) {
        if (!(err instanceof CredentialUnavailableError)) throw err;
        stranded++;
        continue;
      }
      if (next && (await save(row, next))) rewrapped++;
    }
    return { rewrapped, stranded };
  }
}

interface KeyFile {
  primary: string;
  keys: Record<string, string>;
}

/**
 * KEKs from a JSON file (LLMHUB_KEK_FILE): `{"primary": "k2", "keys": {"k1": "<base64 32 bytes>", "k2": "..."}}`.
 * Unwrapping reads the file again only for a key it does not hold yet; wrapping reads it every time (registration
 * and rewrap, never a request), so a rotated file takes effect on every process without a restart.
 */
export class KeyFileKeks implements KeyEncryptionKeys {
  private file: KeyFile | undefined;

  constructor(private readonly path: string) {}

  private async load(fresh: boolean): Promise<KeyFile> {
    if (this.file && !fresh) return this.file;
    const parsed = JSON.parse(await readFile(this.path, 'utf8')) as KeyFile;
    for (const [id, key] of Object.entries(parsed.keys ?? {}))
      if (unb64(key).length !== 32) throw new Error(`key file ${this.path}: key '${id}' is not 32 bytes of base64`);
    if (!parsed.keys?.[parsed.primary])
      throw new Error(`key file ${this.path}: primary key '${parsed.primary}' is missing`);
    this.file = parsed;
    return parsed;
  }

  private async key(id: string): Promise<Buffer> {
    const k = (await this.load(false)).keys[id] ?? (await this.load(true)).keys[id];
    if (!k) throw new CredentialUnavailableError(`key-encryption key '${id}' is not in the key file`);
    return unb64(k);
  }

  async primary(): Promise<string> {
    return (await this.load(true)).primary;
  }

  async wrap(dataKey: Buffer): Promise<{ kek: string; wrapped: string }> {
    const kek = await this.primary();
    const s = gcmSeal(await this.key(kek), dataKey, Buffer.from(kek, 'utf8'));
    return { kek, wrapped: b64(Buffer.concat([s.iv, s.tag, s.ciphertext])) };
  }

  async unwrap(kek: string, wrapped: string): Promise<Buffer> {
    const raw = unb64(wrapped);
    return gcmOpen(await this.key(kek), raw.subarray(0, 12), raw.subarray(12, 28), raw.subarray(28), Buffer.from(kek));
  }
}

/** A new key file's content with one fresh key (for dev set-up and tests). */
export const newKeyFile = (id = 'k1', keys: Record<string, string> = {}): string =>
  JSON.stringify({ primary: id, keys: { ...keys, [id]: b64(randomBytes(32)) } });
