-- Buckets an operator lets a tenant read besides its own (storage scope, api/routes/platform.ts).
CREATE TABLE storage_grants (
  tenant_id   text NOT NULL REFERENCES tenants(id),
  bucket      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, bucket)
);
CREATE INDEX storage_grants_bucket ON storage_grants (bucket);
