-- The board's history and the incident timeline read transitions and fault
-- changes by time; tickets can be resolved.
CREATE INDEX IF NOT EXISTS breaker_transitions_at ON breaker_transitions (at_ms);
CREATE INDEX IF NOT EXISTS fault_changes_at ON fault_changes (at_ms);
ALTER TABLE tickets ADD COLUMN resolved_at_ms INTEGER;
