-- A failed batch's own errors in OpenAI's shape ({code, message, param, line} each): its input file gone, unreadable
-- or changed in the tenant's bucket after upload (activities/batch). NULL for every other batch.
ALTER TABLE batches ADD COLUMN errors jsonb;
