-- A confirmation link's secret is checked on every click. The hash used to be cleared on
-- confirmation, after which any secret "confirmed" the watch again (200), which also told an
-- anonymous caller the id existed. The hash is now kept; being confirmed is confirmed_at.
ALTER TABLE watch ADD COLUMN confirmed_at timestamptz;
UPDATE watch SET confirmed_at = created_at WHERE confirm_hash IS NULL;
-- Unconfirmed watches always hold the hash their link is checked against.
ALTER TABLE watch ADD CONSTRAINT watch_unconfirmed_has_hash
    CHECK (confirmed_at IS NOT NULL OR confirm_hash IS NOT NULL);
