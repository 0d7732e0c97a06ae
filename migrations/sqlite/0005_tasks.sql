-- Task types (issue 13): what a dataset asks for (classification, regression, multilabel),
-- decided at upload; and, for regression, the targets' range. Models carry their task.

ALTER TABLE datasets ADD COLUMN task TEXT NOT NULL DEFAULT 'classification';
ALTER TABLE datasets ADD COLUMN target_summary TEXT;  -- JSON {min, max, mean, std}; regression only
ALTER TABLE models ADD COLUMN task TEXT NOT NULL DEFAULT 'classification';
