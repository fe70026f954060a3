-- A conversation the user deleted is hidden at once: DELETE answers before a conversation worker removes
-- the row (and its sandbox), and in between every read of the API treats it as gone.
ALTER TABLE conversations ADD COLUMN deleting boolean NOT NULL DEFAULT false;
