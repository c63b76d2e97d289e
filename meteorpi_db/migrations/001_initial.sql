-- meteorpi schema, version 1.
-- Keys are UUIDs; every table that must not hold a thing twice has the constraint that says so,
-- so concurrent imports of the same entity collide in PostgreSQL, not in our code.

CREATE TABLE camera_status (
    status_id         uuid PRIMARY KEY,
    camera_id         text NOT NULL,
    lens              text NOT NULL,
    sensor            text NOT NULL,
    inst_name         text,
    inst_url          text,
    software_version  integer NOT NULL,
    valid_from        timestamptz NOT NULL,
    valid_to          timestamptz,
    lat               double precision NOT NULL,
    long              double precision NOT NULL,
    gps               boolean NOT NULL,
    location_error    double precision NOT NULL,
    alt               double precision NOT NULL,
    az                double precision NOT NULL,
    rot               double precision NOT NULL,
    orientation_error double precision NOT NULL,
    width             double precision NOT NULL,
    seq               bigserial UNIQUE,
    CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE INDEX camera_status_camera_time ON camera_status (camera_id, valid_from);

CREATE TABLE status_region (
    status_id   uuid NOT NULL REFERENCES camera_status ON DELETE CASCADE,
    region_index integer NOT NULL,
    point_index  integer NOT NULL,
    x            integer NOT NULL,
    y            integer NOT NULL,
    PRIMARY KEY (status_id, region_index, point_index)
);

CREATE TABLE file_record (
    file_id       uuid PRIMARY KEY,
    camera_id     text NOT NULL,
    status_id     uuid NOT NULL REFERENCES camera_status,
    file_time     timestamptz NOT NULL,
    file_offset   double precision NOT NULL,  -- seconds since the previous local noon
    mime_type     text NOT NULL,
    semantic_type text NOT NULL,
    file_name     text,
    file_size     bigint NOT NULL CHECK (file_size >= 0),
    md5           char(32) NOT NULL,
    seq           bigserial UNIQUE
);
CREATE INDEX file_record_time ON file_record (file_time);
CREATE INDEX file_record_camera_time ON file_record (camera_id, file_time);

CREATE TABLE file_meta (
    file_id      uuid NOT NULL REFERENCES file_record ON DELETE CASCADE,
    meta_index   integer NOT NULL,
    meta_key     text NOT NULL,
    string_value text,
    number_value double precision,
    date_value   timestamptz,
    PRIMARY KEY (file_id, meta_index)
);
CREATE INDEX file_meta_key ON file_meta (meta_key);

CREATE TABLE event (
    event_id     uuid PRIMARY KEY,
    camera_id    text NOT NULL,
    status_id    uuid NOT NULL REFERENCES camera_status,
    event_time   timestamptz NOT NULL,
    event_offset double precision NOT NULL,
    event_type   text NOT NULL,
    seq          bigserial UNIQUE
);
CREATE INDEX event_time ON event (event_time);
CREATE INDEX event_camera_time ON event (camera_id, event_time);

CREATE TABLE event_meta (
    event_id     uuid NOT NULL REFERENCES event ON DELETE CASCADE,
    meta_index   integer NOT NULL,
    meta_key     text NOT NULL,
    string_value text,
    number_value double precision,
    date_value   timestamptz,
    PRIMARY KEY (event_id, meta_index)
);
CREATE INDEX event_meta_key ON event_meta (meta_key);

-- The ordered files of an event.
CREATE TABLE event_file (
    event_id   uuid NOT NULL REFERENCES event ON DELETE CASCADE,
    file_index integer NOT NULL,
    file_id    uuid NOT NULL REFERENCES file_record,
    PRIMARY KEY (event_id, file_index),
    UNIQUE (event_id, file_id)
);
CREATE INDEX event_file_file ON event_file (file_id);

-- Who imported what, and when (entities registered locally have no row here).
CREATE TABLE import_record (
    entity_id   uuid PRIMARY KEY,
    entity_type text NOT NULL CHECK (entity_type IN ('status', 'file', 'event')),
    user_id     text NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app_user (
    user_id       text PRIMARY KEY,
    password_hash text NOT NULL,
    roles         text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (roles <@ ARRAY['user', 'camera_admin', 'import']::text[])
);

CREATE TABLE export_config (
    config_id            uuid PRIMARY KEY,
    name                 text NOT NULL UNIQUE,
    description          text,
    target_url           text NOT NULL,
    user_id              text NOT NULL,
    password             text NOT NULL,
    export_type          text NOT NULL CHECK (export_type IN ('event', 'file')),
    search               jsonb NOT NULL,
    enabled              boolean NOT NULL DEFAULT true,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_error           text,                      -- why the last task failed (for `export list`)
    high_water_seq       bigint NOT NULL DEFAULT 0  -- entities up to this seq have been marked
);

-- One row per entity to export under a configuration; survives restarts.
CREATE TABLE export_task (
    config_id   uuid NOT NULL REFERENCES export_config ON DELETE CASCADE,
    entity_id   uuid NOT NULL,
    entity_type text NOT NULL CHECK (entity_type IN ('event', 'file')),
    entity_time timestamptz NOT NULL,
    -- skipped: not sent because it no longer matches (a stand-alone file that joined an event).
    state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'complete', 'skipped')),
    due_at      timestamptz NOT NULL DEFAULT now(),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (config_id, entity_id)
);
CREATE INDEX export_task_due ON export_task (due_at, entity_time) WHERE state = 'pending';

-- Failed uploads (bytes that did not match their MD5) per file, so a server refuses an entity
-- after repeated failures instead of asking for the same broken file forever (all workers see it).
CREATE TABLE upload_failure (
    file_id  uuid PRIMARY KEY,
    failures integer NOT NULL DEFAULT 0,
    last_at  timestamptz NOT NULL DEFAULT now()
);
