-- Budget webhook secrets are sealed as provider credentials are (common/credentials.ts): an envelope under the
-- key-encryption key, bound to its budget, never the secret itself. A plain secret cannot be sealed here (the KEK is
-- not the database's), so it is dropped: such a budget keeps its webhookUrl, shows webhookSecretSet false, and its
-- alerts are not sent until an admin sets the budget again with its webhookSecret.
ALTER TABLE budgets DROP COLUMN webhook_secret;
ALTER TABLE budgets ADD COLUMN webhook_secret jsonb;
