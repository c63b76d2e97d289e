-- Nothing is mailed to an address that did not agree, and confirmation mails are bounded.
--
-- Every e-mail watch now waits for its link (signed-in users' used to be confirmed at once for
-- any address), and an unopened link expires: its watch is removed rather than kept forever.
ALTER TABLE watch ADD COLUMN confirm_expires timestamptz;
UPDATE watch SET confirm_expires = created_at + interval '24 hours' WHERE confirmed_at IS NULL;
ALTER TABLE watch ADD CONSTRAINT watch_unconfirmed_expires
    CHECK (confirmed_at IS NOT NULL OR confirm_expires IS NOT NULL);
CREATE INDEX watch_unconfirmed_expiry ON watch (confirm_expires) WHERE confirmed_at IS NULL;

-- One unopened link per address (lower-cased) at a time, whoever asked. The row outlives the
-- deletion of its watch (watch_id becomes NULL) until it expires: deleting a pending watch and
-- adding it again would otherwise mail the address as often as anyone liked. Opening the link
-- frees the address at once. owner_user is who asked (NULL: anonymously), for the caps.
CREATE TABLE confirmation_pending (
    address    text PRIMARY KEY,
    watch_id   uuid REFERENCES watch ON DELETE SET NULL,
    owner_user text,
    expires_at timestamptz NOT NULL
);
CREATE INDEX confirmation_pending_owner ON confirmation_pending (owner_user);
CREATE INDEX confirmation_pending_watch ON confirmation_pending (watch_id);
INSERT INTO confirmation_pending (address, watch_id, owner_user, expires_at)
SELECT DISTINCT ON (lower(email)) lower(email), watch_id, owner_user, confirm_expires
FROM watch WHERE confirmed_at IS NULL ORDER BY lower(email), created_at DESC;

-- Users' e-mail watches made before this never asked their address: they stop until added again.
UPDATE watch SET enabled = false,
    disabled_reason = 'the address never agreed (made before e-mail watches were confirmed); delete it and add it again to mail a confirmation link'
WHERE owner_user IS NOT NULL AND email IS NOT NULL AND enabled;
