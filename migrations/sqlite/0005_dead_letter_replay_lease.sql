-- A lease on a dead letter while it is being replayed (SQLite).
--
-- A replay takes the lease before it publishes and marks the letter replayed after the bus has
-- confirmed it, so two replays of one letter at once cannot both publish, and a discard waits
-- for a replay in progress. A replay cut off midway (the server stopped) leaves the lease to end
-- by itself.

ALTER TABLE dead_letters ADD COLUMN lease_until TEXT;
