-- The change feed: one row per change a reader can see, written by triggers inside the very
-- transaction that makes the change (so a rolled-back import is never in the feed, and no code
-- path that writes can forget to log), then one NOTIFY per transaction with a constant payload.
--
-- Readers order rows by (xid, seq) and read only rows whose xid is below the xmin of their
-- snapshot: every transaction below xmin has ended, so a transaction that commits after a later
-- one is read before it, never skipped (seq alone would let a reader pass a row still invisible).

CREATE TABLE feed_log (
    seq         bigserial NOT NULL,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind        text NOT NULL CHECK (kind IN ('status', 'event', 'file')),
    op          text NOT NULL CHECK (op IN ('added', 'changed', 'removed')),
    entity_id   uuid NOT NULL,
    camera_id   text NOT NULL,
    event_type  text,
    event_time  timestamptz,
    summary     jsonb NOT NULL DEFAULT '{}',
    logged_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (xid, seq)
);
CREATE INDEX feed_log_logged_at ON feed_log (logged_at);

-- Where retention has cut the log: a cursor at or before it may have missed rows.
CREATE TABLE feed_horizon (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    xid         xid8 NOT NULL,
    seq         bigint NOT NULL
);

CREATE FUNCTION feed_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Same channel, same payload: PostgreSQL delivers one notification per transaction.
    PERFORM pg_notify('meteorpi_feed', '');
    RETURN NULL;
END $$;

CREATE TRIGGER feed_log_notify AFTER INSERT ON feed_log
    FOR EACH STATEMENT EXECUTE FUNCTION feed_notify();

CREATE FUNCTION feed_log_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO feed_log (kind, op, entity_id, camera_id, event_type, event_time, summary)
    VALUES ('event', 'added', NEW.event_id, NEW.camera_id, NEW.event_type, NEW.event_time,
            jsonb_build_object('status_id', replace(NEW.status_id::text, '-', '')));
    RETURN NULL;
END $$;

CREATE TRIGGER event_feed AFTER INSERT ON event
    FOR EACH ROW EXECUTE FUNCTION feed_log_event();

CREATE FUNCTION feed_log_file() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO feed_log (kind, op, entity_id, camera_id, event_type, event_time, summary)
    VALUES ('file', 'added', NEW.file_id, NEW.camera_id, NEW.semantic_type, NEW.file_time,
            jsonb_strip_nulls(jsonb_build_object(
                'status_id', replace(NEW.status_id::text, '-', ''), 'mime_type', NEW.mime_type,
                'file_name', NEW.file_name, 'file_size', NEW.file_size, 'md5', NEW.md5)));
    RETURN NULL;
END $$;

CREATE TRIGGER file_record_feed AFTER INSERT ON file_record
    FOR EACH ROW EXECUTE FUNCTION feed_log_file();

CREATE FUNCTION feed_log_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.valid_to IS NOT DISTINCT FROM OLD.valid_to THEN
        RETURN NULL;
    END IF;
    INSERT INTO feed_log (kind, op, entity_id, camera_id, event_time, summary)
    VALUES ('status', CASE TG_OP WHEN 'INSERT' THEN 'added' ELSE 'changed' END, NEW.status_id,
            NEW.camera_id, NEW.valid_from,
            jsonb_strip_nulls(jsonb_build_object(
                'lat', NEW.lat, 'long', NEW.long, 'alt', NEW.alt, 'az', NEW.az,
                'valid_from', (extract(epoch FROM NEW.valid_from) * 1000)::bigint,
                'valid_to', (extract(epoch FROM NEW.valid_to) * 1000)::bigint)));
    RETURN NULL;
END $$;

CREATE TRIGGER camera_status_feed AFTER INSERT OR UPDATE OF valid_to ON camera_status
    FOR EACH ROW EXECUTE FUNCTION feed_log_status();
