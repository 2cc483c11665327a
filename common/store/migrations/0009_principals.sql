-- Platform operators are not members of any tenant: their keys live apart from tenants' keys.
CREATE TABLE platform_api_keys (
  id           text PRIMARY KEY,
  name         text NOT NULL,
  secret_hash  bytea NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz,
  revoked_at   timestamptz
);

-- A suspended tenant's keys and tokens are refused; its data and running operations stay.
ALTER TABLE tenants ADD COLUMN suspended_at timestamptz;
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;

CREATE FUNCTION llmhub_notify_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('llmhub_gateway', 'tenant:' || COALESCE(NEW.id, OLD.id));
  RETURN NULL;
END $$;

CREATE TRIGGER tenants_state_notify AFTER UPDATE OF suspended_at OR DELETE ON tenants
  FOR EACH ROW EXECUTE FUNCTION llmhub_notify_tenant();
