-- Watch names are unique per owner (the owning user; for a watch without one, its e-mail
-- address, compared without case), never across the archive: one global namespace answered
-- "a watch named 'x' exists already" to anyone, which told them the names others use and let
-- them take a name first.
ALTER TABLE watch DROP CONSTRAINT watch_name_key;
CREATE UNIQUE INDEX watch_name_per_user ON watch (owner_user, name) WHERE owner_user IS NOT NULL;
CREATE UNIQUE INDEX watch_name_per_address ON watch (lower(owner_email), name) WHERE owner_email IS NOT NULL;
