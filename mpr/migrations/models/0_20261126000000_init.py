"""Initial schema: media assets, presets, jobs, job chunks (and aerich's own table).

aerich writes SQL for one dialect; MPR runs on SQLite and PostgreSQL, so this
migration carries the schema for both (generated from the models with
Tortoise's schema generator) and picks the one for the connection.
"""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True

SQLITE = r"""
CREATE TABLE IF NOT EXISTS "mpr_media_asset" (
    "id" CHAR(36) NOT NULL PRIMARY KEY,
    "path" VARCHAR(1024) NOT NULL UNIQUE /* relative to MEDIA_IN */,
    "filename" VARCHAR(512) NOT NULL,
    "kind" VARCHAR(16) NOT NULL /* VIDEO: video\nAUDIO: audio */,
    "size" BIGINT NOT NULL,
    "status" VARCHAR(16) NOT NULL /* PENDING: pending\nREADY: ready\nERROR: error */,
    "error" TEXT,
    "duration" REAL,
    "container" VARCHAR(64),
    "video_codec" VARCHAR(64),
    "audio_codec" VARCHAR(64),
    "width" INT,
    "height" INT,
    "fps" REAL,
    "bitrate" BIGINT,
    "sample_rate" INT,
    "channels" INT,
    "probe" JSON,
    "comments" TEXT NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL
) /* A source video or audio file under MEDIA_IN. */;
CREATE INDEX IF NOT EXISTS "idx_mpr_media_a_status_75c58e" ON "mpr_media_asset" ("status");
CREATE TABLE IF NOT EXISTS "mpr_transcode_preset" (
    "id" CHAR(36) NOT NULL PRIMARY KEY,
    "name" VARCHAR(128) NOT NULL UNIQUE,
    "description" TEXT NOT NULL,
    "container" VARCHAR(16) NOT NULL,
    "video_codec" VARCHAR(32) /* encoder name, 'copy', or null for none */,
    "video_bitrate" VARCHAR(16),
    "crf" INT,
    "speed_preset" VARCHAR(16),
    "width" INT,
    "height" INT,
    "fps" REAL,
    "audio_codec" VARCHAR(32) /* encoder name, 'copy', or null for none */,
    "audio_bitrate" VARCHAR(16),
    "sample_rate" INT,
    "channels" INT,
    "extra" JSON NOT NULL /* whitelisted extra options */,
    "source" VARCHAR(128) NOT NULL /* builtin, a plugin name, or user */,
    "modified" INT NOT NULL /* a user edited this plugin preset */,
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL
) /* An encoding recipe. Extra options come only from a validated whitelist. */;
CREATE TABLE IF NOT EXISTS "mpr_transcode_job" (
    "id" CHAR(36) NOT NULL PRIMARY KEY,
    "source_path" VARCHAR(1024) NOT NULL /* asset path at creation */,
    "preset_snapshot" JSON NOT NULL,
    "output_path" VARCHAR(1024) NOT NULL UNIQUE /* relative to MEDIA_OUT */,
    "output_size" BIGINT,
    "output_duration" REAL,
    "output_probe" JSON,
    "trim_start" REAL,
    "trim_end" REAL,
    "priority" INT NOT NULL,
    "executor" VARCHAR(32) NOT NULL,
    "external_id" VARCHAR(512),
    "status" VARCHAR(16) NOT NULL /* PENDING: pending\nPROCESSING: processing\nCOMPLETED: completed\nFAILED: failed\nCANCELLED: cancelled */,
    "progress" REAL NOT NULL,
    "speed" REAL,
    "eta" REAL,
    "error" TEXT,
    "attempts" INT NOT NULL,
    "chunked" INT NOT NULL,
    "chunk_seconds" REAL,
    "chunk_workers" INT,
    "worker" VARCHAR(128) /* host:pid of the worker running it */,
    "heartbeat_at" TIMESTAMP,
    "created_at" TIMESTAMP NOT NULL,
    "started_at" TIMESTAMP,
    "finished_at" TIMESTAMP,
    "updated_at" TIMESTAMP NOT NULL,
    "preset_id" CHAR(36) REFERENCES "mpr_transcode_preset" ("id") ON DELETE SET NULL,
    "source_asset_id" CHAR(36) REFERENCES "mpr_media_asset" ("id") ON DELETE SET NULL
) /* One transcode, trim or remux of one asset. Status changes only through ``mpr.jobs.transition``. */;
CREATE INDEX IF NOT EXISTS "idx_mpr_transco_status_2642ea" ON "mpr_transcode_job" ("status");
CREATE TABLE IF NOT EXISTS "mpr_job_chunk" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "index" INT NOT NULL,
    "start" REAL NOT NULL,
    "end" REAL NOT NULL,
    "status" VARCHAR(16) NOT NULL /* QUEUED: queued\nRUNNING: running\nDONE: done\nFAILED: failed\nCANCELLED: cancelled */,
    "attempts" INT NOT NULL,
    "worker" VARCHAR(64),
    "output_key" VARCHAR(1024),
    "error" TEXT,
    "started_at" TIMESTAMP,
    "finished_at" TIMESTAMP,
    "job_id" CHAR(36) NOT NULL REFERENCES "mpr_transcode_job" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_mpr_job_chu_job_id_904021" UNIQUE ("job_id", "index")
) /* One time segment of a chunked job. */;
CREATE TABLE IF NOT EXISTS "aerich" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSON NOT NULL
);
"""

POSTGRES = r"""
CREATE TABLE IF NOT EXISTS "mpr_media_asset" (
    "id" UUID NOT NULL PRIMARY KEY,
    "path" VARCHAR(1024) NOT NULL UNIQUE,
    "filename" VARCHAR(512) NOT NULL,
    "kind" VARCHAR(16) NOT NULL,
    "size" BIGINT NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "error" TEXT,
    "duration" DOUBLE PRECISION,
    "container" VARCHAR(64),
    "video_codec" VARCHAR(64),
    "audio_codec" VARCHAR(64),
    "width" INT,
    "height" INT,
    "fps" DOUBLE PRECISION,
    "bitrate" BIGINT,
    "sample_rate" INT,
    "channels" INT,
    "probe" JSONB,
    "comments" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx_mpr_media_a_status_75c58e" ON "mpr_media_asset" ("status");
COMMENT ON COLUMN "mpr_media_asset"."path" IS 'relative to MEDIA_IN';
COMMENT ON COLUMN "mpr_media_asset"."kind" IS 'VIDEO: video\nAUDIO: audio';
COMMENT ON COLUMN "mpr_media_asset"."status" IS 'PENDING: pending\nREADY: ready\nERROR: error';
COMMENT ON TABLE "mpr_media_asset" IS 'A source video or audio file under MEDIA_IN.';
CREATE TABLE IF NOT EXISTS "mpr_transcode_preset" (
    "id" UUID NOT NULL PRIMARY KEY,
    "name" VARCHAR(128) NOT NULL UNIQUE,
    "description" TEXT NOT NULL,
    "container" VARCHAR(16) NOT NULL,
    "video_codec" VARCHAR(32),
    "video_bitrate" VARCHAR(16),
    "crf" INT,
    "speed_preset" VARCHAR(16),
    "width" INT,
    "height" INT,
    "fps" DOUBLE PRECISION,
    "audio_codec" VARCHAR(32),
    "audio_bitrate" VARCHAR(16),
    "sample_rate" INT,
    "channels" INT,
    "extra" JSONB NOT NULL,
    "source" VARCHAR(128) NOT NULL,
    "modified" BOOL NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL
);
COMMENT ON COLUMN "mpr_transcode_preset"."video_codec" IS 'encoder name, ''copy'', or null for none';
COMMENT ON COLUMN "mpr_transcode_preset"."audio_codec" IS 'encoder name, ''copy'', or null for none';
COMMENT ON COLUMN "mpr_transcode_preset"."extra" IS 'whitelisted extra options';
COMMENT ON COLUMN "mpr_transcode_preset"."source" IS 'builtin, a plugin name, or user';
COMMENT ON COLUMN "mpr_transcode_preset"."modified" IS 'a user edited this plugin preset';
COMMENT ON TABLE "mpr_transcode_preset" IS 'An encoding recipe. Extra options come only from a validated whitelist.';
CREATE TABLE IF NOT EXISTS "mpr_transcode_job" (
    "id" UUID NOT NULL PRIMARY KEY,
    "source_path" VARCHAR(1024) NOT NULL,
    "preset_snapshot" JSONB NOT NULL,
    "output_path" VARCHAR(1024) NOT NULL UNIQUE,
    "output_size" BIGINT,
    "output_duration" DOUBLE PRECISION,
    "output_probe" JSONB,
    "trim_start" DOUBLE PRECISION,
    "trim_end" DOUBLE PRECISION,
    "priority" INT NOT NULL,
    "executor" VARCHAR(32) NOT NULL,
    "external_id" VARCHAR(512),
    "status" VARCHAR(16) NOT NULL,
    "progress" DOUBLE PRECISION NOT NULL,
    "speed" DOUBLE PRECISION,
    "eta" DOUBLE PRECISION,
    "error" TEXT,
    "attempts" INT NOT NULL,
    "chunked" BOOL NOT NULL,
    "chunk_seconds" DOUBLE PRECISION,
    "chunk_workers" INT,
    "worker" VARCHAR(128),
    "heartbeat_at" TIMESTAMPTZ,
    "created_at" TIMESTAMPTZ NOT NULL,
    "started_at" TIMESTAMPTZ,
    "finished_at" TIMESTAMPTZ,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "preset_id" UUID REFERENCES "mpr_transcode_preset" ("id") ON DELETE SET NULL,
    "source_asset_id" UUID REFERENCES "mpr_media_asset" ("id") ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS "idx_mpr_transco_status_2642ea" ON "mpr_transcode_job" ("status");
COMMENT ON COLUMN "mpr_transcode_job"."source_path" IS 'asset path at creation';
COMMENT ON COLUMN "mpr_transcode_job"."output_path" IS 'relative to MEDIA_OUT';
COMMENT ON COLUMN "mpr_transcode_job"."status" IS 'PENDING: pending\nPROCESSING: processing\nCOMPLETED: completed\nFAILED: failed\nCANCELLED: cancelled';
COMMENT ON COLUMN "mpr_transcode_job"."worker" IS 'host:pid of the worker running it';
COMMENT ON TABLE "mpr_transcode_job" IS 'One transcode, trim or remux of one asset. Status changes only through ``mpr.jobs.transition``.';
CREATE TABLE IF NOT EXISTS "mpr_job_chunk" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "index" INT NOT NULL,
    "start" DOUBLE PRECISION NOT NULL,
    "end" DOUBLE PRECISION NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "attempts" INT NOT NULL,
    "worker" VARCHAR(64),
    "output_key" VARCHAR(1024),
    "error" TEXT,
    "started_at" TIMESTAMPTZ,
    "finished_at" TIMESTAMPTZ,
    "job_id" UUID NOT NULL REFERENCES "mpr_transcode_job" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_mpr_job_chu_job_id_904021" UNIQUE ("job_id", "index")
);
COMMENT ON COLUMN "mpr_job_chunk"."status" IS 'QUEUED: queued\nRUNNING: running\nDONE: done\nFAILED: failed\nCANCELLED: cancelled';
COMMENT ON TABLE "mpr_job_chunk" IS 'One time segment of a chunked job.';
CREATE TABLE IF NOT EXISTS "aerich" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSONB NOT NULL
);
"""


async def upgrade(db: BaseDBAsyncClient) -> str:
    return POSTGRES if db.schema_generator.DIALECT == "postgres" else SQLITE


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
DROP TABLE IF EXISTS "mpr_job_chunk";
DROP TABLE IF EXISTS "mpr_transcode_job";
DROP TABLE IF EXISTS "mpr_transcode_preset";
DROP TABLE IF EXISTS "mpr_media_asset";
DROP TABLE IF EXISTS "aerich";
"""


MODELS_STATE = (
    "eJztXWtz4ygW/SuUvkx3VTaVOM9JbW2VY6t73JPYWceZnZ3JlJpI2GYjg0ZCnWRn898X0M"
    "N6W3JsR3brS5cDHIQOCLiXw+2/lBk1kOnsf6EPnalLHpUL8JdC4AzxH6m8PaBAy5rniAQG"
    "H0yvsGVr/6EPmh4WfXCYDXXGM8fQdBBPMpCj29himBIBGRAEGJ4h4KDJDBEG6BhAICtABu"
    "CV7Yt6DKrzijCZlIe4BP/pIo3RCWJTZHPg778rPFPkYWKgZ+WPP4KfyBHZ4k/rURtjZBox"
    "DrAhQDJdYy+WTOsR9kkWFK3jb0xNd0bmha0XNqUkLI0JE6kTRJANGRLVM9sVdBDXNH36Ao"
    "a8ls+LeE2MYAw0hq4pSBVorwHzNEXT+oORdquONE1JER4gIoT6STolorN4Ux359hPRhL+1"
    "Do/Pjs+PTo/PeRHZzDDl7NV79JwYDyjp6Y+UV5kPGfRKSI4jpMo+qMBrUH4xtQGRRdwGCX"
    "Ny5wN0a9ids+kwaLM0m59MCnP4DBEJPscCsoWMFtDVHdxdXqngZqh2ere9QV88Zfbi/GnO"
    "M0UST8BMcjBU21cJghHJmAQK6PXLN+SWIZePReY6aX47U2irxJ1Jinu8RZDoKGsk++gE2/"
    "wN1sW1wou6KOj2snwr/7xT79TuBfDQ92R41+/3+p8vgO0SwjvgnnQHffUCGJSge/Kp3bsS"
    "pccQm6J0p93vqFcySRdMmKbfgsXTzQw+ayYiEzblfx6eFvTnL+1h56f28MPh6UdRN+XLt7"
    "e49/2clsyKdyBkDM0sltGFufN5FLK5Kf1gS+bzJ2o/Ijv7i8jmc45Y6ivwtxZ1mXDiA/b0"
    "uMSAPT3OHbAiK84vdZnlMu0RvVThOI7aPZ4PD1plmBbF8icHmZlYPG2bZgzmEXrOWz0DwC"
    "5wXMDoSP11JBdMx18wAx4/XLd//RhbSq8G/c9B8QjvnavBZdZeEBkazNgQdjlrwnYq2BOG"
    "yAT3hg/dD37sVk/0rtXbUfv6JtYd3fZIFTmt+K7GT/2QXCLDSsC/eqOfgPgT/MYXdMkmdd"
    "jElk+clxv9pog2QZdRjdAnDRpRToLkICnWy2NMsDNdqpsT0Kaf69zPwp+S5YC4u+t1s7t3"
    "jkj0rOtiY1/gdssCkfPlkddHUfblm76+CrfO+DHTB+G7gxJGHbURnpCf0UvK7Ejw6fvGRj"
    "Ykjs5/f/Gq205m56nz79mGT6E7LDKsOAX8xZFnznXat512V1Ukzw9Qf3yCtqHFCBc5tEUT"
    "KWHZdNasNUumQAInkhvxEqLJPvnXyMCw7TiIKRluy0ju3iLH5UyU1WBYeKHrsg0c6to6At"
    "+wgSigNoCugSkYc2sNuLwzbXCtdnttrddPOzGrgjPcmW9xX+bPHqufORa7MZW/j12iC16B"
    "fJL45/gfFY3rDUwlewX+TAvyLXQFWyIovxqfxTpcxYqNTMjwNwQYDQfjUv6GNZkV4luRvy"
    "vQHsVszl20MQvu5LBVgmleKpdomRfn+RFnOT/LOecCbJ25Vn7pddXBhTcV35P2XbfH/5Lz"
    "cT3caw7+b8Ygv8STXO9agNgZz9qPrdbR0Vnr4Oj0/OT47Ozk/CB0saWzinxtl73Pwt0W4z"
    "7zPKXWHun0EmohYggeKw79G7XflR5oH39Phmq7++8LYCNovNwTdTgcDC9A6JB5/4+hcSZt"
    "0plkuJwb0cYU4QWHX1HQkidg20P7Kg7A+NMYf1Y1j38MtAtje91Of7m+a8JS16vwnIA1TC"
    "9mWu6dqjOdgDVML2b6CRtZdmfuxjAsv9TOsG7krvjUdYrwZJrhTs9lcw5o6EzTObYydtAF"
    "2wa/fLNjKLFjeMBMcFHNKoyAdmi8bto0hDPLRFo2+/kGeRy1Q/SvbLrQp5AQ3zNfktUopK"
    "E0Tall04eMUfrldtDP8UoHgOShMNYZ+B8wsbOFrBZQJpgotpmT5vFe/GRAVJC0mXU6E7r0"
    "jIGc76SIYjYoY3yHM5a1uCl0G8HlNC9x5Aq0ELU7IBCevAExX/wPc0vEEf4cUqiNcC1jyV"
    "6PI5ter0uvZ0hiZOtTIo58tUFM3pExB1/6qE8/D+X5ZqabcjlpRz3XvZSy43WdgowYZRmS"
    "jCSlxaIMFpTWfK1OyRtlAWyP/8QzIa+w0cx9FlfFKM+XKo99cCvPaYDYRU6Qw3PMF8CmNn"
    "UnU/D1K3/+vhhC+7I2LOr/+jXnOtp6n9eIPzaxMXmD+MPT8mhVNSAJWH33fYocwEA0FEAG"
    "5J7JnzjrIgaxeG8hpjkEWs6UZmwIioyeFPRN5s9yXTL/DB5cbDJMnH3x2Pf4EtZiFfmXJ6"
    "p+IwnYVsmlBnejOn0iPpXV1SQJ4A55WjbsO/SJXOpQPQPbeMpLeMqDCaSqKyyJazxiy8/9"
    "YlOsVb+jHoc1o73EaJeUVb2sHgU1LJdg2bIxtTHLuDyau4ZGITujylzZQQV/Ad1lWbq+/J"
    "1hFLNB08mkOjTXtSmPbwSPyoi5j/K13EcpKTd6Zsgm0My8UlZEdQy2e8Kctejmv2MR8c1w"
    "0FFvb71Em+rIcWR6Z3B9c6WOZAgLKk7EmQhssT2BLvi7iH1ONV1LFLTJgDAH++ua/tcdD8"
    "ZCqNoOJkQ025cywYwYrMSuX77htgy3zfWEDZ77N4GHVi7CkmEUM/yDlJoIkjwdVohKUPrA"
    "YeviNEzZ7EC+HAyuYgP5spccqXfXlyrfWXyMzxY5bGsO4g83qu0pUshmci5zz0ay5oXKqq"
    "YzTOB2yAXexCxbYN1MqcMuLGyIw3w2RcBrdRCyD2C2lGnSOi9jm7TO840TkZe8vwBt9oAg"
    "W0IRlcQ2UYHqI4FKK98avWP+d7adyrcyescmstv38G03kd2+j35u1Mu7NofnqZczdGrVdJ"
    "kx0BvkmdvzNS8UY6bEl1KiWJHXDGjDbmHIxChjGQ6LqrET4wH6tpLfhYETMwZZLIIibwfo"
    "311dKRnzxAooDgX3N2GNu8lzbJLMYbjMtRHp7HnjxZHo/5ezZWvv+94a8Qdp0cWR+Tgue3"
    "dk/i2ViOpJACIcJVw7NtKxhfaB+sxBgMoyjji4Rt7djbFNZwCCb9DEckMGnqaYISEJzAj4"
    "ubp6m+sgNVgj90D+dZCqQSlXG5Dyff/bqPV7OaMtS5Gcf86agNX3sk1tD1vfKUpZ3RbIdW"
    "uMdj5MmSIXQmQD8cZ74AedWi8/7IlLk6IuMBY/KEHLHKusXjHp0ZobbmdRf+SH3KlTj9Rm"
    "7Ov2OM1x/rGsV7o5jM2IUiQEcVqeEVlwJTWBawbt4kHbxOBrYvDVlc4mBt/61EQ7H+V0qz"
    "ZqHq1LbNRSwBr3SG3WvCYKYhMFcVsoRcLNmuYz/+p3CNjeMCBK6DJGBkBRP3O52XrTN8S9"
    "Q7JKlkqI2KArz3U8R1aVnvD7cQ9AYJnuBBN/OeWrZ1hdHfyqM2pgXl1V7X8UVm/xvwIl4Q"
    "AZWHwVbIqdoEfmBm9trgY0Cs8dUwc1ES2/x17P04Q1ES23RZvQRjbWp0qGJMHP2StSIsB5"
    "mUXag3waVnzin2tJZB74Z9gQ/rCo7yn0SiyI/AP+b8h2Mo+fC46D5pAdPAVtnZyU2JDyUr"
    "kbUpmX8Ojwj6oCw37xHWT38OCgVDzAg4JwgAepozZKGCKVAmVGIJu3jN/HT7wyY7fCer/6"
    "xez1/4k99tM="
)
