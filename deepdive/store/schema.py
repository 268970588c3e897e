"""SQLite schema of a workspace's run store. Bump SCHEMA_VERSION (PRAGMA user_version) on any change, and add the
step that brings the previous version's database up to it to MIGRATIONS."""

SCHEMA_VERSION = 8

STATUSES = ("running", "finished", "interrupted", "failed")
# a person's verdict on an image's label: it needs another label / it is right / even people cannot tell
REVIEW_VERDICTS = ("relabel", "keep", "ambiguous")
HISTOGRAM_KINDS = ("weight", "grad")   # a parameter's values, and its gradient (deepdive.train.histograms)

DDL = f"""
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    dataset TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN {STATUSES!r}),
    config_json TEXT NOT NULL,
    data_source_json TEXT NOT NULL,
    code_version TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    train_seconds REAL,
    test_accuracy REAL,
    num_params INTEGER,
    model_arch TEXT,
    class_names_json TEXT NOT NULL,
    device TEXT,
    run_dir TEXT NOT NULL,
    heartbeat_at TEXT,
    error TEXT,
    notes TEXT                     -- what a person wrote about the run (deepdive edit, the runs page)
);
CREATE INDEX IF NOT EXISTS runs_name ON runs(name);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);

CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL, lr REAL, seconds REAL,
    member INTEGER,                -- an ensemble's member index (its epochs are numbered on across members)
    PRIMARY KEY (run_id, epoch)
);

-- Any other scalar an epoch logged, by name (run.log(grad_norm=...), the recipe's system/... readings); an epoch's
-- go with it.
CREATE TABLE IF NOT EXISTS epoch_metrics (
    run_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,                    -- NULL: logged as NaN
    PRIMARY KEY (run_id, epoch, name),
    FOREIGN KEY (run_id, epoch) REFERENCES epochs(run_id, epoch) ON DELETE CASCADE
);

-- Scalars logged per training step (TensorBoard's scalars by global step): the recipe's train loss, accuracy,
-- learning rate, epoch and training seconds every few steps, run.log_step's; a run's go with it. One row per
-- (name, step): a series reads in order.
CREATE TABLE IF NOT EXISTS step_metrics (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    step INTEGER NOT NULL,
    value REAL,                    -- NULL: logged as NaN or infinite
    PRIMARY KEY (run_id, name, step)
) WITHOUT ROWID;

-- Each parameter's values and last gradient per epoch as a histogram (TensorBoard's histograms, W&B's watch): the
-- recipe's and run.watch(model)'s (deepdive.train.histograms); an epoch's go with it.
CREATE TABLE IF NOT EXISTS histograms (
    run_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    name TEXT NOT NULL,            -- the parameter's name in the model, e.g. "features.0.weight"
    kind TEXT NOT NULL CHECK (kind IN {HISTOGRAM_KINDS!r}),
    position INTEGER NOT NULL,     -- its place among the epoch's histograms (the model's order)
    lo REAL NOT NULL,              -- the bins split [lo, hi] evenly
    hi REAL NOT NULL,
    mean REAL NOT NULL,
    std REAL NOT NULL,
    counts TEXT NOT NULL,          -- JSON list of the values in each bin
    PRIMARY KEY (run_id, epoch, name, kind),
    FOREIGN KEY (run_id, epoch) REFERENCES epochs(run_id, epoch) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS predictions (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    split TEXT NOT NULL,
    idx INTEGER NOT NULL,
    true_label INTEGER NOT NULL,
    pred_label INTEGER NOT NULL,
    confidence REAL NOT NULL,
    loss REAL NOT NULL,
    probs BLOB NOT NULL,
    PRIMARY KEY (run_id, split, idx)
);

CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);

CREATE TABLE IF NOT EXISTS analyses (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    split TEXT NOT NULL,
    status TEXT NOT NULL,
    summary_json TEXT NOT NULL,
    stage_seconds_json TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (run_id, split)
);

-- Reviews belong to images, not runs: `source` names where the image lives ('train' or 'test' of `dataset`,
-- or 'run:<id>/<split>' for a run logged with its own evaluation images), `idx` its index there.
CREATE TABLE IF NOT EXISTS label_reviews (
    dataset TEXT NOT NULL,
    source TEXT NOT NULL,
    idx INTEGER NOT NULL,
    given_label INTEGER NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN {REVIEW_VERDICTS!r}),
    label INTEGER,                 -- the right label, for verdict 'relabel' only
    run_id TEXT,                   -- the run it was reviewed in (kept if that run is deleted)
    reviewed_at TEXT NOT NULL,
    PRIMARY KEY (dataset, source, idx),
    CHECK ((verdict = 'relabel') = (label IS NOT NULL) AND (label IS NULL OR label != given_label))
);

-- Words a person put on an image in the dashboard (deepdive.analysis.tags), keyed like label_reviews by the image.
CREATE TABLE IF NOT EXISTS image_tags (
    dataset TEXT NOT NULL,
    source TEXT NOT NULL,
    idx INTEGER NOT NULL,
    tag TEXT NOT NULL,
    run_id TEXT,                   -- the run it was tagged in (kept if that run is deleted)
    tagged_at TEXT NOT NULL,
    PRIMARY KEY (dataset, source, idx, tag)
);
"""

# version v -> the SQL that turns a v database into a v + 1 one (DDL alone creates a fresh database at the latest).
MIGRATIONS = {
    1: "ALTER TABLE epochs ADD COLUMN member INTEGER;",
    2: "",   # v3 adds label_reviews, which the DDL creates
    3: "ALTER TABLE runs ADD COLUMN notes TEXT;",
    4: "",   # v5 adds epoch_metrics, which the DDL creates
    5: "",   # v6 adds image_tags, which the DDL creates
    6: "",   # v7 adds step_metrics, which the DDL creates
    7: "",   # v8 adds histograms, which the DDL creates
}
