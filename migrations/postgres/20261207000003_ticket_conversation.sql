-- A ticket names the conversation it was opened for (the chat page's, or an API
-- caller's `x-chaosai-conversation`), so that a customer who writes again during
-- an outage keeps one ticket whichever surface they write through. Only open
-- tickets are looked up, so only they are indexed.
ALTER TABLE tickets ADD COLUMN conversation_id TEXT;
UPDATE tickets SET conversation_id =
    (SELECT m.conversation_id FROM messages m WHERE m.request_id = tickets.request_id LIMIT 1)
    WHERE status = 'open';
CREATE INDEX IF NOT EXISTS tickets_open_conversation ON tickets (conversation_id)
    WHERE status = 'open';
-- The lookup no longer goes through the request that opened a ticket.
DROP INDEX IF EXISTS tickets_request;
