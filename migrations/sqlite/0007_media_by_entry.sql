-- The media records of a log entry, by entry (SQLite): assigning an unmatched sender's entries
-- to a customer moves their files with them, tens of thousands at times, without scanning
-- every media record for each chunk of entries.

CREATE INDEX media_comms ON media (comms_id);
