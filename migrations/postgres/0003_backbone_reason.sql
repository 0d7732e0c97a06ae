-- Why the job's backbone was chosen, when the request said "auto". The backbone is decided
-- once, at submission; the worker records this reason with the rest of the recipe.

ALTER TABLE jobs ADD COLUMN backbone_reason TEXT;
