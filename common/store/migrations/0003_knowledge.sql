-- Knowledge bases: a tenant's namespaces and, per document, the content hash its points were made from.
CREATE TABLE knowledge_namespaces (
  tenant_id    text NOT NULL REFERENCES tenants(id),
  name         text NOT NULL,
  embedder_id  text NOT NULL,
  collection   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, name)
);

CREATE TABLE knowledge_documents (
  tenant_id     text NOT NULL,
  namespace     text NOT NULL,
  document_id   text NOT NULL,
  source_uri    text NOT NULL,
  -- sha256 of the source bytes; equal hash = unchanged document = nothing to embed.
  content_hash  text,
  chunk_count   integer NOT NULL DEFAULT 0,
  state         text NOT NULL CHECK (state IN ('indexed', 'failed')),
  error         text,
  ingestion_id  text NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, namespace, document_id),
  FOREIGN KEY (tenant_id, namespace) REFERENCES knowledge_namespaces(tenant_id, name) ON DELETE CASCADE
);
