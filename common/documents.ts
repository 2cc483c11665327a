/**
 * Knowledge documents as both the API (uploads, file type check) and the ingestion activities (listing, parsing) see
 * them, so the API never imports activities.
 */

/** Uploaded files of a namespace live under the tenant's own prefix of the platform bucket. */
export const uploadsPrefix = (tenantId: string, namespace: string) =>
  `${knowledgePrefix(tenantId)}${namespace}/uploads/`;
/** Every namespace's documents of a tenant. */
export const knowledgePrefix = (tenantId: string) => `tenants/${tenantId}/knowledge/`;

export type DocumentFormat = 'pdf' | 'docx' | 'html' | 'markdown' | 'text';

export const FORMAT_BY_EXTENSION: Readonly<Record<string, DocumentFormat>> = {
  pdf: 'pdf',
  docx: 'docx',
  html: 'html',
  htm: 'html',
  md: 'markdown',
  markdown: 'markdown',
  txt: 'text',
  text: 'text',
};

export function formatOf(name: string): DocumentFormat | undefined {
  const ext = /\.([a-z0-9]+)$/i.exec(name)?.[1]?.toLowerCase();
  return ext ? FORMAT_BY_EXTENSION[ext] : undefined;
}
