-- A lease on a dead letter while it is being replayed (PostgreSQL).
--
-- A replay takes the lease before it publishes and marks the letter replayed after the bus has
-- confirmed it, so two replays of one letter at once cannot both publish; a discard meanwhile
-- is refused. The lease's end also tells one replay's lease from a later one. A replay cut off
-- midway (the server stopped) leaves the lease to end by itself.

ALTER TABLE dead_letters ADD COLUMN lease_until timestamptz;
