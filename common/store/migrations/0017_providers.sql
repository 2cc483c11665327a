-- External OpenAI-compatible providers (OpenAI, Azure OpenAI, Anthropic's and vLLM/TGI servers' OpenAI endpoints).
-- tenant_id NULL: a platform operator's provider, usable by every tenant. The credential is envelope-encrypted
-- (common/credentials.ts): a data key per credential, wrapped by a key-encryption key; no plaintext is stored.
CREATE TABLE providers (
  tenant_id    text REFERENCES tenants (id),
  id           text NOT NULL,
  kind         text NOT NULL CHECK (kind IN ('openai', 'azure')),
  base_url     text NOT NULL,
  -- Azure's api-version query parameter.
  api_version  text,
  -- Extra request headers (names and values); answers show their names only.
  headers      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(headers) = 'object'),
  -- gateway model name -> {model: provider model (Azure: deployment), inputPricePerMTok, outputPricePerMTok}.
  models       jsonb NOT NULL CHECK (jsonb_typeof(models) = 'object'),
  credential   jsonb NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX providers_owner_id ON providers (COALESCE(tenant_id, ''), id);

-- A gateway model's provider targets. `stable`/`canary` replace the deployed route's versions where set (a model
-- with no deployed route needs a stable); `fallbacks` are tried in order after the chosen target fails before its
-- first byte. A target is a provider id of the tenant, or `platform/<id>` for an operator's provider.
CREATE TABLE provider_routes (
  tenant_id      text NOT NULL REFERENCES tenants (id),
  model_id       text NOT NULL,
  stable         text,
  canary         text,
  canary_weight  integer NOT NULL DEFAULT 0 CHECK (canary_weight BETWEEN 0 AND 100),
  fallbacks      text[] NOT NULL DEFAULT '{}',
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, model_id)
);

CREATE TRIGGER providers_notify AFTER INSERT OR UPDATE OR DELETE ON providers
  FOR EACH STATEMENT EXECUTE FUNCTION llmhub_notify_gateway();
CREATE TRIGGER provider_routes_notify AFTER INSERT OR UPDATE OR DELETE ON provider_routes
  FOR EACH STATEMENT EXECUTE FUNCTION llmhub_notify_gateway();
