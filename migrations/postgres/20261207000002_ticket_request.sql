-- The last resort finds a conversation's open ticket through the request that
-- opened it, so that a customer who writes again during an outage keeps one ticket.
CREATE INDEX IF NOT EXISTS tickets_request ON tickets (request_id);
