-- Refused uploads counted per file, MD5 and importing account (was: per file alone).
-- Per account, so one import account's bad uploads never get another node's file refused; per
-- MD5, because the count is of uploads of those exact bytes. Counts kept so far are dropped: they
-- belong to no account, and forgetting them costs at most max_failed_uploads more attempts.
DROP TABLE upload_failure;
CREATE TABLE upload_failure (
    file_id  uuid NOT NULL,
    md5      char(32) NOT NULL,
    user_id  text NOT NULL,
    failures integer NOT NULL DEFAULT 0,
    last_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, md5, user_id)
);
