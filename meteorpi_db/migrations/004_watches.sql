-- Watches and alerts (issue 15): who wants to hear of what, coincidence groups (the same meteor
-- seen by several cameras), notifications (one per subscriber per group) and their delivery queue.

-- The coincidence window query: events of one type within Δt of a time.
CREATE INDEX event_type_time ON event (event_type, event_time);

-- Coincidence groups appear on the feed too (written by the matcher, in its transaction).
ALTER TABLE feed_log DROP CONSTRAINT feed_log_kind_check;
ALTER TABLE feed_log ADD CONSTRAINT feed_log_kind_check
    CHECK (kind IN ('status', 'event', 'file', 'coincidence'));

CREATE TABLE watch (
    watch_id        uuid PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    owner_user      text REFERENCES app_user ON DELETE CASCADE,
    owner_email     text,
    kind            text NOT NULL CHECK (kind IN ('event', 'coincidence', 'absence')),
    webhook_url     text,
    -- Standard Webhooks signing secret ("whsec_<base64>"): needed in clear to sign; shown once.
    webhook_secret  text,
    email           text,
    filters         jsonb NOT NULL,          -- event_types, cameras, meta, near, silent_hours...
    max_per_hour    integer NOT NULL CHECK (max_per_hour > 0),
    muted_until     timestamptz,
    digest          boolean NOT NULL DEFAULT false,
    -- E-mail owners confirm through a link: sha256 of its random secret, NULL once confirmed.
    confirm_hash    bytea,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((owner_user IS NULL) <> (owner_email IS NULL)),
    CHECK ((webhook_url IS NULL) <> (email IS NULL)),
    CHECK (webhook_url IS NULL OR webhook_secret IS NOT NULL)
);

-- The matcher's position in the feed: updated in the transaction that creates what it matched.
CREATE TABLE watch_cursor (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    xid  xid8 NOT NULL,
    seq  bigint NOT NULL
);

CREATE TABLE coincidence_group (
    group_id     uuid PRIMARY KEY,
    event_type   text NOT NULL,
    first_time   timestamptz NOT NULL,
    last_time    timestamptz NOT NULL,
    camera_count integer NOT NULL,
    merged_into  uuid REFERENCES coincidence_group ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX coincidence_group_time ON coincidence_group (first_time) WHERE merged_into IS NULL;

CREATE TABLE coincidence_member (
    event_id   uuid PRIMARY KEY REFERENCES event ON DELETE CASCADE,
    group_id   uuid NOT NULL REFERENCES coincidence_group ON DELETE CASCADE,
    camera_id  text NOT NULL,
    event_time timestamptz NOT NULL,
    lat        double precision NOT NULL,
    long       double precision NOT NULL
);
CREATE INDEX coincidence_member_group ON coincidence_member (group_id);

-- One notification per subscriber (user id or e-mail address) per group key, however many of
-- their watches matched: the UNIQUE constraint makes a second insert do nothing.
CREATE TABLE notification (
    notification_id uuid PRIMARY KEY,
    subscriber      text NOT NULL,
    group_key       text NOT NULL,
    watch_id        uuid NOT NULL REFERENCES watch ON DELETE CASCADE,
    kind            text NOT NULL,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subscriber, group_key)
);

-- The delivery queue. 'held': over the rate (or a digest watch), waiting for the digest.
CREATE TABLE delivery (
    delivery_id     bigserial PRIMARY KEY,
    watch_id        uuid NOT NULL REFERENCES watch ON DELETE CASCADE,
    notification_id uuid REFERENCES notification ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('notification', 'digest', 'test')),
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed', 'held', 'digested', 'cancelled')),
    attempts        integer NOT NULL DEFAULT 0,
    due_at          timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX delivery_due ON delivery (due_at) WHERE state = 'pending';
CREATE INDEX delivery_watch_created ON delivery (watch_id, created_at);
CREATE INDEX delivery_held ON delivery (watch_id) WHERE state = 'held';
-- At most one digest waiting per watch.
CREATE UNIQUE INDEX delivery_one_digest ON delivery (watch_id) WHERE kind = 'digest' AND state = 'pending';

CREATE TABLE delivery_attempt (
    attempt_id   bigserial PRIMARY KEY,
    delivery_id  bigint NOT NULL REFERENCES delivery ON DELETE CASCADE,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    status_code  integer,
    error        text,
    duration_ms  integer NOT NULL
);
CREATE INDEX delivery_attempt_delivery ON delivery_attempt (delivery_id);

CREATE FUNCTION delivery_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('meteorpi_delivery', '');
    RETURN NULL;
END $$;

CREATE TRIGGER delivery_queued AFTER INSERT OR UPDATE OF due_at ON delivery
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_notify();
